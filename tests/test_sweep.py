"""Beta sweeps: betas on the replica axis, trained at once, evaluated per beta."""

import functools
import json

import chex
import jax
import numpy as np
import pytest

from tests.conftest import tiny_rect_config
from vaeshapes import data, evaluation, models, parallel, plotting, training
from vaeshapes.validation import UserError, validate_config


def test_beta_sweep_replica_equals_a_plain_run_at_its_beta():
    config = tiny_rect_config()
    config.sweep_betas = (0.5, 4.0)
    assert training.num_replicas(config) == 2
    np.testing.assert_array_equal(training.replica_betas(config), [0.5, 4.0])
    trainer = training.build_trainer(config)
    states, metrics = trainer.run(trainer.fresh_states(), 2)
    kl = np.asarray(metrics["train/kl"])[-1]
    assert kl[1] < kl[0]  # the larger beta pays more for its rate
    for b, beta in enumerate(config.sweep_betas):
        plain = tiny_rect_config()
        plain.beta = beta
        single = training.build_trainer(plain)
        plain_states, _ = single.run(single.fresh_states(), 2)
        chex.assert_trees_all_close(jax.tree_util.tree_map(lambda x, b=b: x[b], states.params),
                                    jax.tree_util.tree_map(lambda x: x[0], plain_states.params),
                                    atol=1e-5)


@pytest.mark.parametrize("betas", [(1.0, 1.0), (-1.0,), ("a",)])
def test_bad_sweep_betas_are_refused(betas):
    config = tiny_rect_config()
    config.sweep_betas = betas
    with pytest.raises(UserError, match="config.sweep_betas"):
        validate_config(config)


def test_sweep_evaluation_reports_each_beta_and_the_rate_distortion_curve(tmp_path):
    config = tiny_rect_config()
    config.num_seeds, config.sweep_betas = 2, (0.1, 10.0)
    config.data.num_val = 32
    training.train(config, tmp_path)
    record = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
    for beta in ("0.1", "10"):
        assert {f"beta_{beta}/train/kl_nats_per_image",
                f"beta_{beta}/train/loss_per_pixel/std"} <= set(record)
    assert record["train/kl_nats_per_image"] == pytest.approx(np.mean(
        [record[f"beta_{beta}/train/kl_nats_per_image"] for beta in ("0.1", "10")]))
    metrics = evaluation.evaluate(tmp_path, iwae_ks=(1,))
    assert metrics["sweep_betas"] == [0.1, 10.0] and metrics["num_seeds"] == 2
    stored = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert stored["per_beta"].keys() == {"0.1", "10"}
    curve = stored["rate_distortion"]
    for b, beta in enumerate(("0.1", "10")):
        run = json.loads((tmp_path / "eval" / f"beta_{beta}" / "metrics.json").read_text())
        assert len(run["per_seed"]["test/recon_nats_per_image"]) == 2
        assert curve["distortion_nats"][b] == run["test/recon_nats_per_image"]
        assert curve["rate_kl_bits"][b] == run["info/kl_bits"]
        assert curve["per_seed"]["rate_kl_bits"][b] == run["per_seed"]["info/kl_bits"]
        assert (tmp_path / "eval" / f"beta_{beta}" / "latent_traversal.png").stat().st_size
        # each beta's replica chosen by validation loss, with that replica's test metrics
        val = run["per_seed"][evaluation.VAL_KEY]
        chosen = run["best_val/seed"]
        assert len(val) == 2 and val[chosen] == min(val)
        assert run["best_val/test/exact_match"] == run["per_seed"]["test/exact_match"][chosen]
        assert run["best_val/prior/valid_rate"] == run["per_seed"]["prior/valid_rate"][chosen]
    assert "rate_channel_bits" not in curve  # no training noise on z
    assert curve["rate_kl_bits"][1] < curve["rate_kl_bits"][0]
    assert (tmp_path / "eval" / "rate_distortion.png").stat().st_size > 0

    # --figure_seed: the other replica's figures and features; metrics unchanged.
    evaluation.evaluate(tmp_path, tmp_path / "eval1", iwae_ks=(1,), figure_seed=1)
    for beta in ("0.1", "10"):
        seed0, seed1 = (json.loads((tmp_path / d / f"beta_{beta}" / "metrics.json").read_text())
                        for d in ("eval", "eval1"))
        assert seed0 == seed1
        features = [(tmp_path / d / f"beta_{beta}" / "features.csv").read_text()
                    for d in ("eval", "eval1")]
        assert features[0].splitlines()[0] == features[1].splitlines()[0]
        assert features[0] != features[1]
    with pytest.raises(UserError, match="--figure_seed=2: the run has 2 seed"):
        evaluation.evaluate(tmp_path, tmp_path / "eval2", iwae_ks=(1,), figure_seed=2)


def test_rate_distortion_of_a_noisy_sweep_carries_the_channel_estimates(tmp_path):
    keys = ("test/recon_nats_per_image", "info/kl_bits", "info/total_bits",
            "info/total_bits_mu")
    per_beta = {beta: {k: v for i, key in enumerate(keys)
                       for k, v in ((key, 10.0 * b + i), (f"{key}/std", 0.1 * i))}
                for b, beta in enumerate(("1", "10"))}
    for b, metrics in enumerate(per_beta.values()):
        metrics["per_seed"] = {key: [10.0 * b + i - 1, 10.0 * b + i + 1]
                               for i, key in enumerate(keys)}
    curve = evaluation.rate_distortion(per_beta, noisy=True)
    assert curve["beta"] == [1.0, 10.0]
    assert curve["distortion_nats"] == [0.0, 10.0]
    assert curve["rate_channel_bits"] == [2.0, 12.0]
    assert curve["rate_channel_bits_mu/std"] == pytest.approx([0.3, 0.3])
    assert curve["per_seed"]["rate_channel_bits"] == [[1.0, 3.0], [11.0, 13.0]]
    assert "rate_channel_bits" not in evaluation.rate_distortion(per_beta, noisy=False)
    plotting.rate_distortion(curve, tmp_path / "rd.png", None, "noisy")
    assert (tmp_path / "rd.png").stat().st_size > 1000


def test_best_by_validation_picks_the_lowest_validation_loss_and_its_test_scalars():
    per_seed = {evaluation.VAL_KEY: np.array([10.4, 10.1, 10.7]),
                "test/neg_elbo_nats_per_image": np.array([10.3, 10.0, 10.6]),
                "prior/valid_rate": np.array([0.93, 0.98, 0.85]),
                "latent/mig": np.array([0.3, 0.4, 0.1]),
                "test/kl_per_dim_bits": np.ones((3, 5))}
    chosen = evaluation.best_by_validation(per_seed)
    assert chosen == {"best_val/seed": 1, "best_val/test/neg_elbo_nats_per_image": 10.0,
                      "best_val/prior/valid_rate": 0.98}
    with pytest.raises(AssertionError):
        evaluation.best_by_validation({evaluation.VAL_KEY: np.ones((3, 2))})


def test_validation_loss_averages_the_logged_estimate_over_draws_of_z():
    config = tiny_rect_config()
    config.data.num_val = 24
    model = models.build_model(config)
    params = models.init_params(model, config, jax.random.PRNGKey(0))
    split = data.build_split_keys(config.data, jax.random.PRNGKey(1))["val"]
    mesh = parallel.make_mesh(1)
    key = jax.random.PRNGKey(2)
    logged = [training.validation_terms(params, split, k, config=config, model=model, mesh=mesh)
              for k in jax.random.split(key, 3)]
    losses = np.array([float(t["recon"] + t["kl"]) for t in logged])
    assert np.ptp(losses) > 0  # the draws of z differ
    loss = jax.jit(functools.partial(evaluation.validation_loss, config=config, model=model,
                                     mesh=mesh, draws=3))(params, split, key)
    chex.assert_shape(loss, ())
    np.testing.assert_allclose(loss, losses.mean(), rtol=1e-5)
