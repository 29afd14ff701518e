import chex
import jax
import jax.numpy as jnp

from tests.conftest import tiny_rect_config
from vaeshapes import models


def test_rect_param_count_matches_source():
    config = tiny_rect_config()
    model = models.build_model(config)
    params = models.init_params(model, config, jax.random.PRNGKey(0))
    assert models.count_params(params) == 21_346


def test_rect_encode_decode_shapes():
    config = tiny_rect_config()
    model = models.build_model(config)
    params = models.init_params(model, config, jax.random.PRNGKey(0))
    x = jnp.zeros((5, 10, 10), jnp.int32)
    mu, logvar = model.apply(params, x, method="encode")
    chex.assert_shape([mu, logvar], (5, 8))
    logits = jax.jit(lambda p, z: model.apply(p, z, method="decode"))(params, mu)
    chex.assert_shape(logits, (5, 10, 10, 10))
    chex.assert_tree_all_finite(logits)
