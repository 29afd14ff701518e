"""A real training subprocess, stopped by a real signal, resumes to identical parameters."""

import signal
import subprocess
import sys

import chex

from tests.conftest import ROOT
from vaeshapes import training

# 1000 epochs of 2 steps: 20 chunks of ~0.2 s, so a signal sent after the first chunk's
# console line always lands well before the end.
EPOCHS = 1000
ARGS = ["--config=configs/rect.py", f"--config.num_epochs={EPOCHS}",
        "--config.data.num_train=32", "--config.data.num_test=32", "--config.batch_size=16",
        "--config.log_every=100", "--config.checkpoint_every=5000",
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
    return proc, err, [int(p.name) for p in (workdir / "checkpoints").iterdir()]


def _assert_stopped_with_checkpoint(proc, err, saved, workdir):
    assert proc.returncode == 75, err
    assert "Resume with the same command" in err and "Traceback" not in err
    assert len(saved) == 1 and 0 < saved[0] < EPOCHS, saved  # a chunk boundary, early
    assert not (workdir / ".lock").exists()


def test_sigint_stops_at_a_chunk_boundary_with_a_checkpoint(tmp_path):
    proc, err, saved = _run_until_signal(tmp_path, signal.SIGINT)
    _assert_stopped_with_checkpoint(proc, err, saved, tmp_path)


def test_sigterm_then_resume_is_bit_identical_to_an_uninterrupted_run(tmp_path):
    proc, err, saved = _run_until_signal(tmp_path / "cut", signal.SIGTERM)
    _assert_stopped_with_checkpoint(proc, err, saved, tmp_path / "cut")
    resumed = subprocess.run(_train(tmp_path / "cut"), cwd=ROOT, capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"(epoch {saved[0]})" in resumed.stdout
    full = subprocess.run(_train(tmp_path / "full"), cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert full.returncode == 0, full.stderr
    _, a, epoch_a, _ = training.load_checkpoint(tmp_path / "cut")
    _, b, epoch_b, _ = training.load_checkpoint(tmp_path / "full")
    assert epoch_a == epoch_b == EPOCHS
    chex.assert_trees_all_equal(a, b)  # params, Adam state, step, keys: bit for bit


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
