"""A real training subprocess, stopped by a real signal or killed at any point (even
mid-checkpoint), resumes to parameters identical to an uninterrupted run."""

import json
import signal
import subprocess
import sys
import time

import chex
import jax
import pytest

from tests.conftest import ROOT
from vaeshapes import parallel, training

# 1000 epochs of 2 steps: 20 chunks of ~0.2 s, every other one ending in a checkpoint,
# so a signal sent after the first chunk's console line always lands well before the end.
EPOCHS = 1000
ARGS = ["--config=configs/rect.py", f"--config.num_epochs={EPOCHS}",
        "--config.data.num_train=32", "--config.data.num_test=32", "--config.batch_size=16",
        "--config.log_every=100", "--config.checkpoint_every=100",
        "--config.eval_batch_size=32"]


def _train(workdir):
    return [sys.executable, str(ROOT / "train.py"), *ARGS, f"--workdir={workdir}"]


def _run_until_signal(workdir, sig):
    """Starts a training subprocess, sends ``sig`` after its first console line, and
    returns (process, stderr, checkpoint epochs)."""
    proc = subprocess.Popen(_train(workdir), cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if line.startswith("Epoch "):
            proc.send_signal(sig)
            break
    _, err = proc.communicate(timeout=300)
    return proc, err, sorted(int(p.name) for p in (workdir / "checkpoints").iterdir())


def _assert_stopped_with_checkpoint(proc, err, saved, workdir):
    assert proc.returncode == 75, err
    assert "Resume with the same command" in err and "Traceback" not in err
    assert saved and 0 < saved[-1] < EPOCHS, saved  # a chunk boundary, early
    assert not (workdir / ".lock").exists()


def _resume_and_compare(workdir, uninterrupted):
    """Re-runs the command in ``workdir`` to the end; its final state must equal the
    uninterrupted run's bit for bit (params, Adam state, step, keys)."""
    resumed = subprocess.run(_train(workdir), cwd=ROOT, capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    _, states, epoch, _ = training.load_checkpoint(workdir)
    assert epoch == EPOCHS
    chex.assert_trees_all_equal(states, uninterrupted)
    return resumed


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("full")
    full = subprocess.run(_train(workdir), cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert full.returncode == 0, full.stderr
    _, states, epoch, _ = training.load_checkpoint(workdir)
    assert epoch == EPOCHS
    return states


def _saving(checkpoint_dir):
    """Whether a checkpoint is being written (Orbax writes to a tmp folder, then renames)."""
    return checkpoint_dir.exists() and any("tmp" in p.name for p in checkpoint_dir.iterdir())


def _kill(workdir, when):
    """Starts training and SIGKILLs it ``when``: 'early' (while it starts up),
    'mid-epoch' (right after its first console line) or 'during save' (the moment a
    checkpoint's tmp folder appears). Returns whether a half-written checkpoint was left."""
    proc = subprocess.Popen(_train(workdir), cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    if when == "early":
        time.sleep(1.0)
    elif when == "mid-epoch":
        next(line for line in proc.stdout if line.startswith("Epoch "))
    else:
        deadline = time.monotonic() + 120
        while not _saving(workdir / "checkpoints") and time.monotonic() < deadline:
            time.sleep(0.0005)
    proc.kill()
    proc.wait(timeout=60)
    return _saving(workdir / "checkpoints")


def test_sigint_stops_at_a_chunk_boundary_with_a_checkpoint(tmp_path):
    proc, err, saved = _run_until_signal(tmp_path, signal.SIGINT)
    _assert_stopped_with_checkpoint(proc, err, saved, tmp_path)


def test_sigterm_then_resume_is_bit_identical_to_an_uninterrupted_run(tmp_path,
                                                                      uninterrupted):
    proc, err, saved = _run_until_signal(tmp_path / "cut", signal.SIGTERM)
    _assert_stopped_with_checkpoint(proc, err, saved, tmp_path / "cut")
    resumed = _resume_and_compare(tmp_path / "cut", uninterrupted)
    assert f"(epoch {saved[-1]})" in resumed.stdout
    starts = [json.loads(line) for line in
              (tmp_path / "cut" / training.ENVIRONMENT_LOG).read_text().splitlines()]
    assert [s["start_epoch"] for s in starts] == [0, saved[-1]]  # one line per start
    for s in starts:
        assert s["cpu_cores"] == parallel.cpu_cores() and s["jax"] == jax.__version__
        assert s["mesh"] == {"seeds": 1, "data": s["devices"]}, s


@pytest.mark.parametrize("when", ["early", "mid-epoch", "during save"])
def test_sigkill_then_resume_is_bit_identical(tmp_path, uninterrupted, when):
    half_written = _kill(tmp_path, when)
    if when == "during save":
        assert half_written, "the kill missed the checkpoint write"
    _resume_and_compare(tmp_path, uninterrupted)


def test_second_writer_is_refused_and_stale_lock_taken_over(tmp_path):
    tmp_path.mkdir(exist_ok=True)
    owner = subprocess.Popen(["sleep", "60"])  # a live process holding the lock
    try:
        (tmp_path / ".lock").write_text(str(owner.pid))
        second = subprocess.run(_train(tmp_path), cwd=ROOT, capture_output=True, text=True,
                                timeout=300)
    finally:
        owner.kill()
        owner.wait()
    assert second.returncode == 2
    assert f"in use by a running train.py (pid {owner.pid})" in second.stderr
    assert not (tmp_path / "checkpoints").exists()
    # The owner is dead now: its lock is stale and taken over.
    taken = subprocess.run(_train(tmp_path) + ["--config.num_epochs=2"], cwd=ROOT,
                           capture_output=True, text=True, timeout=300)
    assert taken.returncode == 0, taken.stderr
    assert not (tmp_path / ".lock").exists()
