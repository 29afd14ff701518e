"""The learned mixture prior end to end: training, evaluation, IWAE weights."""

import jax
import pytest

from tests.conftest import tiny_rect_config
from vaeshapes import data, elbo, evaluation, models, rng, training


def test_a_learned_prior_trains_and_evaluates(tmp_path):
    config = tiny_rect_config()
    config.num_epochs, config.model.prior_components = 2, 4
    training.train(config, tmp_path)
    metrics = evaluation.evaluate(tmp_path, iwae_ks=(1,))
    assert metrics["num_params"] == 21_346 + 4 * (2 * 8 + 1)
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
