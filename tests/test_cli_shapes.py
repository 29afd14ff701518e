"""train.py and eval.py on shapes as a user runs them: the standard VAE, then the modified
one continued from it (its own file, so that parallel test workers can balance it)."""

import json

import pytest

from tests.test_cli import run

SHAPES_TINY = ["--config.num_epochs=1", "--config.data.num_train=384",
               "--config.data.num_val=96", "--config.data.num_test=96",
               "--config.batch_size=64", "--config.eval_batch_size=48"]
SHAPES_EVAL_KEYS = ("num_params", "test/bce_per_pixel", "test/bce_per_pixel_mean_z",
                    "test/kl_nats_per_image", "test/neg_elbo_nats_per_image",
                    "info/per_dim_bits", "info/total_bits", "info/kl_bits",
                    "info/total_bits_mu", "latent/mig", "prior/valid_rate",
                    "prior/round_trip_valid_rate", "posterior/valid_rate",
                    "probe/class_acc_k1", "probe/class_acc_k1_pixels")
SHAPES_FIGURES = ("manifold_z0_z1.png", "manifold_top2.png", "reconstructions.png",
                  "prior_samples.png", "latent_traversal.png", "latent_scatter.png",
                  "bits_per_dim.png")


def test_shapes_standard_then_modified_from_it(tmp_path):
    std, noisy = tmp_path / "std", tmp_path / "noisy"
    result = run("train.py", "--config=configs/shapes.py", f"--workdir={std}", *SHAPES_TINY)
    assert result.returncode == 0, result.stderr
    assert "val loss" in result.stdout
    record = json.loads((std / "metrics.jsonl").read_text().splitlines()[0])
    assert {"val/loss_per_pixel", "val/recon_per_pixel", "val/kl_per_pixel"} <= set(record)
    result = run("train.py", "--config=configs/shapes_noisy.py", f"--workdir={noisy}",
                 f"--config.init_from={std}", *SHAPES_TINY)
    assert result.returncode == 0, result.stderr
    assert "Initialised params from" in result.stdout
    result = run("eval.py", f"--ckpt={noisy}", "--iwae_ks=1")
    assert result.returncode == 0, result.stderr
    metrics = json.loads((noisy / "eval" / "metrics.json").read_text())
    for key in SHAPES_EVAL_KEYS:
        assert key in metrics, key
    assert metrics["num_params"] == 153_185
    assert metrics["info/noise_std"] == 0.5
    assert len(metrics["info/per_dim_bits"]) == 8
    assert metrics["info/total_bits"] == pytest.approx(sum(metrics["info/per_dim_bits"]))
    # the source's estimate counts posterior noise as signal, so it is the larger one
    assert metrics["info/total_bits"] > metrics["info/total_bits_mu"]
    assert 0 < metrics["test/bce_per_pixel"] < 1
    assert list(metrics["latent/factor_dim"]) == ["class", "centre_x", "centre_y", "size"]
    for name in SHAPES_FIGURES:
        assert (noisy / "eval" / name).stat().st_size > 1000, name
