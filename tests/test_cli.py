"""train.py and eval.py as a user runs them (subprocesses), on a tiny config."""

import json
import shutil
import subprocess
import sys

import pytest

from tests.conftest import ROOT

TINY = ["--config.num_epochs=2", "--config.data.num_train=64", "--config.data.num_test=64",
        "--config.batch_size=16", "--config.checkpoint_every=1", "--config.eval_batch_size=32",
        "--config.log_every=1"]

RECT_EVAL_KEYS = ("num_params", "test/recon_per_pixel", "test/kl_per_pixel",
                  "test/neg_elbo_nats_per_image", "test/entropy_floor_nats_per_image",
                  "test/exact_match", "test/pixel_accuracy", "latent/mig", "latent/active_dims",
                  "latent/edit_spearman", "prior/valid_rate", "prior/round_trip_valid_rate",
                  "posterior/valid_rate", "probe/colour_acc_k1", "probe/colour_acc_k10",
                  "probe/colour_acc_k5_pixels")
FIGURES = ("training_curves.png", "reconstructions.png", "prior_samples.png",
           "latent_traversal.png", "factor_association.png", "factor_dims.png",
           "latent_edit.png", "interpolation.png")


def run(script, *args, cwd=ROOT):
    return subprocess.run([sys.executable, str(ROOT / script), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def rect_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("rect")
    result = run("train.py", "--config=configs/rect.py", f"--workdir={workdir}", *TINY)
    assert result.returncode == 0, result.stderr
    return workdir, result


def test_train_prints_source_format_lines(rect_run):
    _, result = rect_run
    lines = [line for line in result.stdout.splitlines() if line.startswith("Epoch ")]
    assert len(lines) == 2
    assert lines[0].startswith("Epoch 0: Loss = ") and "(Recon: " in lines[0]


def test_eval_of_a_step_folder_writes_metrics_and_figures(rect_run):
    # (a workdir resolving to its latest step is tested with the corrupted checkpoint)
    workdir, _ = rect_run
    result = run("eval.py", f"--ckpt={workdir / 'checkpoints' / '1'}", "--iwae_ks=1,100")
    assert result.returncode == 0, result.stderr
    outdir = workdir / "eval"  # the default
    metrics = json.loads((outdir / "metrics.json").read_text())
    for key in RECT_EVAL_KEYS:
        assert key in metrics, key
    assert metrics["num_params"] == 21_346 and metrics["first_replica"] == 0
    assert metrics["epoch"] == 1
    assert metrics["test/entropy_floor_nats_per_image"] == pytest.approx(9.8233, abs=1e-4)
    assert 0 <= metrics["test/exact_match"] <= 1
    assert metrics["test/neg_elbo_nats_per_image"] > 9.8233  # nothing beats the entropy
    k1, k100 = (metrics[f"test/iwae_nats_per_image_k{k}"] for k in (1, 100))
    assert 9.8233 < k100 < k1  # more importance samples, a tighter bound
    assert metrics["test/iwae_gap_to_floor_nats_k100"] == pytest.approx(k100 - 9.8233, abs=1e-4)
    factors = ["colour", "top", "left", "height", "width"]
    assert list(metrics["latent/factor_dim"]) == factors
    assert all(0 <= d < 8 for d in metrics["latent/factor_dim"].values())
    assert all(0 <= s <= 1 for s in metrics["latent/factor_score"].values())
    assert metrics["latent/edit_dim"] == metrics["latent/factor_dim"]["height"]
    assert len(metrics["latent/association"]) == 5 and len(metrics["latent/association"][0]) == 8
    for name in FIGURES:
        assert (outdir / name).stat().st_size > 1000, name
    rows = (outdir / "features.csv").read_text().splitlines()
    assert len(rows) == 1 + 64
    assert rows[0].startswith("index,colour,") and rows[0].endswith(",sigma_7")


def test_rerun_in_same_workdir_resumes_without_retraining(rect_run):
    workdir, _ = rect_run
    result = run("train.py", "--config=configs/rect.py", f"--workdir={workdir}", *TINY)
    assert result.returncode == 0, result.stderr
    assert "Resuming from" in result.stdout
    assert "Epoch " not in result.stdout


@pytest.mark.parametrize("script,args,needle", [
    ("train.py", ["--config=configs/nope.py"], "no such config file"),
    ("train.py", ["--config=configs/rect.py", "--config.nonexistent=3"], "nonexistent"),
    ("train.py", ["--config=configs/rect.py", "--config.batch_size=abc"], "batch_size"),
    ("train.py", ["--config=configs/rect.py", "--config.batch_size=0"], "batch_size"),
    ("train.py", ["--config=configs/rect.py", "--config.num_epochs=-5"], "num_epochs"),
    ("train.py", ["--config=configs/rect.py", "--config.latent_dim=0"], "latent_dim"),
    ("train.py", ["--config=configs/rect.py", "--config.learning_rate=-1.0"], "learning_rate"),
    ("train.py", ["--config=configs/rect.py", "--config.data.num_train=0"], "num_train"),
    ("train.py", ["--config=configs/rect.py", "--config.batch_size=5000"], "larger than"),
    ("train.py", ["--config=configs/rect.py", "--config.model.num_classes=3"], "num_classes"),
    ("train.py", [], "--config"),
    ("train.py", ["--config=configs/shapes.py", "--config.init_from=/nonexistent"],
     "config.init_from=/nonexistent: no such file"),
    ("train.py", ["--config=configs/rect.py", "--config.model.conv_impl=cuda"], "conv_impl"),
    ("train.py", ["--config=configs/rect.py", "--config.keep_best=maybe"], "keep_best"),
    ("train.py", ["--config=configs/rect.py", "--config.sweep_betas=(1,1)"], "sweep_betas"),
    ("train.py", ["--config=configs/rect.py", "--nosplit_cpu", "--split_cpu_batch"],
     "--split_cpu_batch"),
    ("train.py", ["--config=configs/rect.py", "--num_processes=2", "--process_id=0"],
     "cannot join the multi-process run"),
    ("eval.py", ["--ckpt=/nonexistent/run"], "no such file"),
    ("eval.py", ["--ckpt=configs"], "no checkpoint found"),
    ("eval.py", [], "--ckpt"),
    ("eval.py", ["--ckpt=configs", "--iwae_ks=1,zero"], "--iwae_ks"),
    ("eval.py", ["--ckpt=configs", "--figure_seed=-1"], "--figure_seed"),
    ("eval.py", ["--ckpt=configs", "--prior_samples=0"], "--prior_samples=0: must be 1"),
])
def test_bad_input_gets_one_line_error(script, args, needle, tmp_path):
    result = run(script, *args, f"--workdir={tmp_path}" if script == "train.py" else
                 f"--outdir={tmp_path}")
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    assert needle in errors[0]


@pytest.mark.parametrize("script", ["eval.py", "train.py"])
def test_corrupted_checkpoint_gets_one_line_error_naming_it(rect_run, tmp_path, script):
    workdir = tmp_path / "run"
    shutil.copytree(rect_run[0], workdir)
    latest = workdir / "checkpoints" / "2"
    for f in (latest / "state").rglob("*"):
        if f.is_file():
            f.write_bytes(b"")  # truncated to nothing
    args = [f"--ckpt={workdir}"] if script == "eval.py" else [
        "--config=configs/rect.py", f"--workdir={workdir}", *TINY]
    result = run(script, *args)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and str(latest) in errors[0], result.stderr
