"""The fast patch convolutions compute what flax's convolutions compute."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from tests.conftest import load_config
from vaeshapes import layers, models

# (size, ci, co, stride, fold_width): every layer of both models, odd sizes, and rows.
CASES = [(10, 8, 4, 1, False), (10, 4, 10, 1, False), (28, 1, 32, 2, False),
         (14, 32, 64, 2, False), (7, 64, 64, 2, False), (9, 3, 5, 2, False),
         (28, 32, 1, 1, False),
         (10, 8, 4, 1, True), (10, 4, 10, 1, True), (9, 3, 5, 2, True), (7, 5, 3, 1, True)]


@pytest.mark.parametrize("size,ci,co,stride,fold_width", CASES)
@pytest.mark.parametrize("kind", ["conv", "conv_transpose"])
def test_patch_layers_match_flax_outputs_and_gradients(size, ci, co, stride, kind,
                                                       fold_width):
    ref, fast = {
        "conv": (nn.Conv(co, (3, 3), strides=(stride, stride), padding="SAME"),
                 layers.PatchConv(co, strides=(stride, stride), fold_width=fold_width)),
        "conv_transpose": (nn.ConvTranspose(co, (3, 3), strides=(stride, stride),
                                            padding="SAME"),
                           layers.PatchConvTranspose(co, strides=(stride, stride),
                                                     fold_width=fold_width)),
    }[kind]
    x = jax.random.normal(jax.random.PRNGKey(0), (2, size, size, ci))
    params = ref.init(jax.random.PRNGKey(1), x)
    chex.assert_trees_all_equal_shapes(params, fast.init(jax.random.PRNGKey(1), x))
    params = jax.tree_util.tree_map(lambda p: p + 0.1, params)  # nonzero bias too

    def loss(module, p, x):
        return jnp.sum(jnp.sin(module.apply(p, x)))

    chex.assert_trees_all_close(fast.apply(params, x), ref.apply(params, x), atol=1e-5)
    g_ref = jax.grad(loss, argnums=(1, 2))(ref, params, x)
    g_fast = jax.jit(jax.grad(loss, argnums=(1, 2)), static_argnums=0)(fast, params, x)
    chex.assert_trees_all_close(g_fast, g_ref, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", ["rect", "shapes"])
@pytest.mark.parametrize("impl", ["patches", "rows"])
def test_models_agree_across_conv_impls(name, impl):
    config = load_config(name)
    config.model.conv_impl = impl
    fast = models.build_model(config)
    config.model.conv_impl = "xla"
    ref = models.build_model(config)
    params = models.init_params(ref, config, jax.random.PRNGKey(0))
    x = (jnp.zeros((2, 10, 10), jnp.int32).at[:, 2:5, 3:8].set(4) if name == "rect"
         else jnp.zeros((2, 28, 28, 1)).at[:, 5:20, 6:12].set(1.0))
    chex.assert_trees_all_close(fast.apply(params, x), ref.apply(params, x), atol=1e-4)
