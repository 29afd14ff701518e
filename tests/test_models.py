import chex
import jax
import jax.numpy as jnp
import pytest

from tests.conftest import load_config, tiny_rect_config
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


def test_forward_flops_count_the_architecture():
    # rect, per 10x10 image: four 3x3 SAME convs (8->4, 4->8, 8->4, 4->10), two 800->8
    # heads and the 8->800 decoder input, as multiply-adds x 2.
    convs = 100 * 9 * (8 * 4 + 4 * 8 + 8 * 4 + 4 * 10)
    assert models.forward_flops(load_config("rect")) == 2 * (convs + 2 * 800 * 8 + 8 * 800)
    # shapes: the issue's ~40 MFLOP per image for forward + backward.
    assert 3 * models.forward_flops(load_config("shapes")) == pytest.approx(40e6, rel=0.01)


def test_dense_layers_add_their_params_and_flops():
    config = tiny_rect_config()
    model = models.build_model(config)
    base = models.count_params(models.init_params(model, config, jax.random.PRNGKey(0)))
    base_flops = models.forward_flops(config)
    config.model.encoder_dense = (16,)  # 800 -> 16, then the heads read 16 instead of 800
    config.model.decoder_dense = (12,)  # 8 -> 12, then 12 -> 800 instead of 8 -> 800
    model = models.build_model(config)
    params = models.init_params(model, config, jax.random.PRNGKey(0))
    assert models.count_params(params) - base == (
        800 * 16 + 16 + 2 * (16 - 800) * 8 + 8 * 12 + 12 + (12 - 8) * 800)
    assert models.forward_flops(config) - base_flops == 2 * (
        800 * 16 + 2 * (16 - 800) * 8 + 8 * 12 + (12 - 8) * 800)
    logits = model.apply(params, jnp.zeros((3, 8)), method="decode")
    chex.assert_shape(logits, (3, 10, 10, 10))
