"""The learned priors end to end: training, evaluation, IWAE weights."""

import json
import shutil

import chex
import jax
import jax.numpy as jnp
import optax
import pytest

from tests.conftest import tiny_rect_config
from vaeshapes import analysis, checkpoints, data, elbo, evaluation, models, rng, training

# prior params: the mixture's 4 x (8 means, 8 log-variances, 1 weight); the autoregressive
# prior's first factor (3 x 4) and, for d = 1..7, Dense(d -> 16) + Dense(16 -> 12).
PRIOR_PARAMS = {"mixture": 4 * (2 * 8 + 1),
                "autoregressive": 3 * 4 + sum(d * 16 + 16 + 16 * 12 + 12 for d in range(1, 8))}


@pytest.mark.parametrize("prior_type", ["mixture", "autoregressive"])
def test_a_learned_prior_trains_and_evaluates(tmp_path, prior_type, monkeypatch):
    # "valid" by pixel-sum parity, ~half of any images: counts out of 37 show in the rates
    monkeypatch.setitem(analysis.IS_VALID_SAMPLE, "rect", lambda im: im.sum() % 2 == 0)
    config = tiny_rect_config()
    config.num_epochs, config.model.prior_components = 2, 4
    config.model.prior_type, config.model.prior_hidden = prior_type, (16,)
    training.train(config, tmp_path)
    metrics = evaluation.evaluate(tmp_path, iwae_ks=(1,), prior_samples=37)
    assert metrics["num_params"] == 21_346 + PRIOR_PARAMS[prior_type]
    assert metrics["test/neg_elbo_nats_per_image"] > 9.8233
    assert metrics["prior_samples"] == 37  # valid rates are counts out of 37
    for name in ("prior/valid_rate", "prior/round_trip_valid_rate"):
        assert 0 < metrics[name] < 1
        assert metrics[name] * 37 == pytest.approx(round(metrics[name] * 37), abs=1e-4)
    assert "info/kl_per_dim_bits" not in metrics  # no KL per dimension to a mixture
    for name in ("prior_samples.png", "bits_per_dim.png"):
        assert (tmp_path / "eval" / name).stat().st_size > 1000


def test_iwae_evaluation_weighs_by_the_learned_prior():
    config = tiny_rect_config()
    config.model.prior_components = 3
    model = models.build_model(config)
    params = models.init_params(model, config, jax.random.PRNGKey(0))
    params["params"]["prior_means"] = params["params"]["prior_means"] + 3.0  # far from N(0, I)
    images = data.build_splits(config.data, rng.purpose_key(0, "data"))["test"].images
    got = jax.jit(lambda p: evaluation.iwae_metrics(p, images, jax.random.PRNGKey(1),
                                                    config=config, model=model, ks=(20,)))(params)
    bound = lambda m: -elbo.iwae_terms(m, params, images, jax.random.PRNGKey(2),
                                       likelihood="categorical", num_samples=20)["bound"].mean()
    fixed_prior = models.build_model(tiny_rect_config())  # same encoder/decoder, N(0, I)
    want, standard = float(bound(model)), float(bound(fixed_prior))
    assert abs(want - standard) > 20.0  # the shifted prior costs many nats
    assert float(got["test/iwae_nats_per_image_k20"]) == pytest.approx(want, abs=2.0)


def test_train_only_prior_refits_the_prior_and_nothing_else(tmp_path):
    config = tiny_rect_config()
    config.num_epochs, config.model.prior_components = 1, 4
    training.train(config, tmp_path / "joint")
    config.train_only_prior, config.init_from = True, str(tmp_path / "joint")
    training.train(config, tmp_path / "prior")
    (_, joint, _, _), (_, refit, _, _) = (training.load_checkpoint(tmp_path / name)
                                          for name in ("joint", "prior"))
    for name, before in joint.params["params"].items():
        after = refit.params["params"][name]
        if name.startswith("prior_"):
            assert float(jnp.abs(after - before).max()) > 1e-4, name
        else:
            chex.assert_trees_all_equal(after, before)


def test_train_only_prior_fits_a_fresh_prior_of_another_shape(tmp_path):
    config = tiny_rect_config()
    config.num_epochs, config.model.prior_components = 1, 4
    config.model.prior_type, config.model.prior_hidden = "autoregressive", (8,)
    training.train(config, tmp_path / "joint")
    config.train_only_prior, config.init_from = True, str(tmp_path / "joint")
    config.model.prior_fourier_features, config.model.prior_hidden = 3, (6,)
    states = training.train(config, tmp_path / "refit")
    (_, joint, _, _), (_, refit, _, _) = (training.load_checkpoint(tmp_path / name)
                                          for name in ("joint", "refit"))
    joint_prior, joint_rest = training.split_prior(joint.params)
    refit_prior, refit_rest = training.split_prior(refit.params)
    chex.assert_trees_all_equal(refit_rest, joint_rest)
    chex.assert_shape(refit_prior["prior_conditionals_0"]["Dense_0"]["kernel"], (1, 1 + 2 * 3, 6))
    # the fresh prior trained from this config's own initialisation
    fresh = training.init_states(config, models.build_model(config),
                                 training.make_optimizer(config))
    start = training.split_prior(fresh.params)[0]["prior_first"]
    assert float(jnp.abs(refit_prior["prior_first"] - start).max()) > 1e-4
    chex.assert_trees_all_equal(training.split_prior(states.params)[1], joint_rest)
    config.num_seeds = 2  # one prior per replica of the source
    with pytest.raises(training.UserError, match="set --config.num_seeds=1"):
        training.train(config, tmp_path / "other")
    config.num_seeds, config.first_replica = 1, 1  # another replica's keys than the source's
    with pytest.raises(training.UserError, match="--config.first_replica=0"):
        training.train(config, tmp_path / "other")
    config.first_replica = 0
    config.num_seeds, config.model.embed_dim = 1, 4  # the rest of the model must match
    with pytest.raises(training.UserError, match="its model differs"):
        training.train(config, tmp_path / "other")


def test_prior_only_gradients_equal_the_prior_part_of_the_full_gradient():
    config = tiny_rect_config()
    config.model.prior_components, config.model.prior_type = 3, "autoregressive"
    config.model.prior_hidden = (8,)
    model = models.build_model(config)
    params = models.init_params(model, config, jax.random.PRNGKey(0))
    images = data.build_splits(config.data, rng.purpose_key(0, "data"))["test"].images[:16]

    def loss_fn(p):
        terms = elbo.elbo_terms(model, p, images, jax.random.PRNGKey(1),
                                likelihood="categorical")
        return elbo.loss(terms, 1.0, 0.0), terms

    (full_loss, _), full = jax.value_and_grad(loss_fn, has_aux=True)(params)
    (loss, _), grads = jax.jit(lambda p: training.value_and_grad(loss_fn, p, True))(params)
    assert float(loss) == pytest.approx(float(full_loss), rel=1e-6)
    prior, rest = training.split_prior(grads)
    chex.assert_trees_all_close(prior, training.split_prior(full)[0], rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_equal(rest, jax.tree_util.tree_map(jnp.zeros_like,
                                                             training.split_prior(full)[1]))
    assert float(optax.tree.norm(training.split_prior(full)[1])) > 0  # zeros by choice


def test_chain_order_starts_with_the_most_dependent_dims_and_is_kept_on_resume(tmp_path):
    config = tiny_rect_config()
    config.num_epochs, config.model.prior_components = 1, 4
    config.model.prior_type, config.model.prior_hidden = "autoregressive", (8,)
    training.train(config, tmp_path / "joint")
    source_config, states, epoch, _ = training.load_checkpoint(tmp_path / "joint")
    params = jax.tree_util.tree_map(lambda p: p, states.params)  # a mutable copy
    params["params"]["fc_mu"] = {name: p.at[..., 5].set(-p[..., 2])  # mu_5 = -mu_2
                                 for name, p in params["params"]["fc_mu"].items()}
    edited = checkpoints.manager(tmp_path / "edited" / checkpoints.CHECKPOINT_DIR)
    checkpoints.save(edited, epoch, states.replace(params=params), source_config)
    edited.close()

    config.train_only_prior, config.init_from = True, str(tmp_path / "edited")
    config.num_epochs, config.model.prior_order = 2, models.CHAIN_ORDER
    order = training.chain_prior_order(config)
    assert order[:2] == (2, 5)  # the most dependent pair first
    assert sorted(order) == list(range(8))
    training.train(config, tmp_path / "refit", stop_at=1)
    stored = json.loads((tmp_path / "refit" / "config.json").read_text())
    assert tuple(stored["model"]["prior_order"]) == order
    assert tuple(config.model.prior_order) == models.CHAIN_ORDER  # the caller's config
    shutil.rmtree(tmp_path / "edited")  # a resume takes the order it started with
    training.train(config, tmp_path / "refit")
    refit_config, _, refit_epoch, _ = training.load_checkpoint(tmp_path / "refit")
    assert (refit_epoch, tuple(refit_config.model.prior_order)) == (2, order)
    with pytest.raises(ValueError, match="resolve it first"):
        models.build_model(config)
