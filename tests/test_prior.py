"""The learned priors end to end: training, evaluation, IWAE weights."""

import chex
import jax
import jax.numpy as jnp
import pytest

from tests.conftest import tiny_rect_config
from vaeshapes import data, elbo, evaluation, models, rng, training

# prior params: the mixture's 4 x (8 means, 8 log-variances, 1 weight); the autoregressive
# prior's first factor (3 x 4) and, for d = 1..7, Dense(d -> 16) + Dense(16 -> 12).
PRIOR_PARAMS = {"mixture": 4 * (2 * 8 + 1),
                "autoregressive": 3 * 4 + sum(d * 16 + 16 + 16 * 12 + 12 for d in range(1, 8))}


@pytest.mark.parametrize("prior_type", ["mixture", "autoregressive"])
def test_a_learned_prior_trains_and_evaluates(tmp_path, prior_type):
    config = tiny_rect_config()
    config.num_epochs, config.model.prior_components = 2, 4
    config.model.prior_type, config.model.prior_hidden = prior_type, (16,)
    training.train(config, tmp_path)
    metrics = evaluation.evaluate(tmp_path, iwae_ks=(1,))
    assert metrics["num_params"] == 21_346 + PRIOR_PARAMS[prior_type]
    assert metrics["test/neg_elbo_nats_per_image"] > 9.8233
    assert 0 <= metrics["prior/valid_rate"] <= 1
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
