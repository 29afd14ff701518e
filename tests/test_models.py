from functools import partial

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


def _mixture_prior_model(latent_dim: int, components: int):
    """A tiny rect model with a learned mixture prior, its params perturbed from init."""
    config = tiny_rect_config()
    config.latent_dim = latent_dim
    config.model.prior_components = components
    model = models.build_model(config)
    params = models.init_params(model, config, jax.random.PRNGKey(0))
    prior = params["params"]
    keys = jax.random.split(jax.random.PRNGKey(1), 2)
    prior["prior_logvars"] = 0.5 * jax.random.normal(keys[0], (components, latent_dim))
    prior["prior_logits"] = jax.random.normal(keys[1], (components,))
    return config, model, params


def test_mixture_prior_adds_its_params_and_is_a_normalised_density():
    config, model, params = _mixture_prior_model(latent_dim=1, components=3)
    config.model.prior_components = 0
    plain = models.init_params(models.build_model(config), config, jax.random.PRNGKey(0))
    assert models.count_params(params) - models.count_params(plain) == 3 * (1 + 1 + 1)
    grid = jnp.linspace(-12.0, 12.0, 4001)[:, None]
    log_p = jax.jit(lambda p, z: model.apply(p, z, method="prior_log_prob"))(params, grid)
    chex.assert_shape(log_p, (4001,))
    assert float(jnp.exp(log_p).sum() * (grid[1, 0] - grid[0, 0])) == pytest.approx(1.0,
                                                                                    abs=1e-4)
    prior = params["params"]
    weights = jax.nn.softmax(prior["prior_logits"])
    mean = float((weights * prior["prior_means"][:, 0]).sum())
    samples = model.apply(params, jax.random.PRNGKey(2), 20_000, method="prior_sample")
    chex.assert_shape(samples, (20_000, 1))
    assert float(samples.mean()) == pytest.approx(mean, abs=0.05)
    # the density the samples come from is the one log_prob reports
    assert float(jnp.exp(log_p) @ grid[:, 0] * (grid[1, 0] - grid[0, 0])) == pytest.approx(
        mean, abs=1e-4)


@pytest.mark.parametrize("fourier_features", [0, 3])
def test_autoregressive_prior_is_a_normalised_density_that_its_samples_follow(
        fourier_features):
    config = tiny_rect_config()
    config.latent_dim, config.model.prior_components = 2, 3
    config.model.prior_type, config.model.prior_hidden = "autoregressive", (8,)
    config.model.prior_fourier_features = fourier_features
    model = models.build_model(config)
    params = models.init_params(model, config, jax.random.PRNGKey(0))
    prior = {k: v for k, v in params["params"].items() if k.startswith("prior_")}
    # first factor: 3 logits, means, log-variances; z_2 | z_1: F frequencies, then
    # Dense(1 + 2F -> 8) + Dense(8 -> 9)
    inputs = 1 + 2 * fourier_features
    assert models.count_params(prior) == (3 * 3 + fourier_features + (inputs * 8 + 8)
                                          + (8 * 9 + 9))
    leaves, tree = jax.tree_util.tree_flatten(prior)
    keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
    perturbed = [leaf + 0.3 * jax.random.normal(k, leaf.shape)
                 for leaf, k in zip(leaves, keys, strict=True)]
    params["params"].update(jax.tree_util.tree_unflatten(tree, perturbed))  # z_2 | z_1 moves
    axis = jnp.linspace(-10.0, 10.0, 801)
    grid = jnp.stack(jnp.meshgrid(axis, axis, indexing="ij"), axis=-1).reshape(-1, 2)
    log_p = jax.jit(lambda p, z: model.apply(p, z, method="prior_log_prob"))(params, grid)
    chex.assert_shape(log_p, (801 * 801,))
    mass = jnp.exp(log_p) * (axis[1] - axis[0]) ** 2
    assert float(mass.sum()) == pytest.approx(1.0, abs=2e-3)
    samples = model.apply(params, jax.random.PRNGKey(2), 40_000, method="prior_sample")
    chex.assert_shape(samples, (40_000, 2))
    for region in (lambda z: z[:, 0] > z[:, 1], lambda z: (z[:, 0] > 0) & (z[:, 1] < 0.5)):
        assert float(region(samples).mean()) == pytest.approx(float(mass[region(grid)].sum()),
                                                              abs=0.015)
    # z_2's conditional moves with z_1
    moved = model.apply(params, jnp.array([[-1.0, 0.0], [1.0, 0.0]]), method="prior_log_prob")
    first = model.apply(params, jnp.array([[-1.0, 9.0], [1.0, 9.0]]), method="prior_log_prob")
    assert float(jnp.abs((moved - first)[0] - (moved - first)[1])) > 1e-3


def test_prior_order_permutes_the_autoregressive_factorisation():
    config = tiny_rect_config()
    config.latent_dim, config.model.prior_components = 3, 2
    config.model.prior_type, config.model.prior_hidden = "autoregressive", (4,)
    plain = models.build_model(config)
    params = models.init_params(plain, config, jax.random.PRNGKey(0))
    out = params["params"]["prior_conditionals_1"]["Dense_1"]  # z_3 | z_1, z_2 depends on
    out["kernel"] = 0.5 * jax.random.normal(jax.random.PRNGKey(1), out["kernel"].shape)
    config.model.prior_order = (2, 0, 1)  # z_3 first, then z_1, then z_2
    ordered = models.build_model(config)
    z = jax.random.normal(jax.random.PRNGKey(2), (4, 6, 3))
    log_p = lambda m, z: jax.jit(partial(m.apply, method="prior_log_prob"))(params, z)
    # the ordered prior is the plain one applied to (z_3, z_1, z_2)
    chex.assert_trees_all_close(log_p(ordered, z), log_p(plain, z[..., (2, 0, 1)]),
                                rtol=1e-6)
    assert float(jnp.abs(log_p(ordered, z) - log_p(plain, z)).max()) > 1e-3
    key = jax.random.PRNGKey(3)
    sample = lambda m: m.apply(params, key, 5, method="prior_sample")
    chex.assert_trees_all_close(sample(ordered)[:, (2, 0, 1)], sample(plain))
    assert models.inverse_permutation((2, 0, 1)) == (1, 2, 0)


def test_without_a_learned_prior_the_prior_is_the_standard_normal():
    config = tiny_rect_config()
    model = models.build_model(config)
    params = models.init_params(model, config, jax.random.PRNGKey(0))
    z = model.apply(params, jax.random.PRNGKey(3), 6, method="prior_sample")
    chex.assert_trees_all_close(z, jax.random.normal(jax.random.PRNGKey(3), (6, 8)))
    want = -0.5 * (jnp.log(2 * jnp.pi) * 8 + jnp.square(z).sum(axis=1))
    chex.assert_trees_all_close(model.apply(params, z, method="prior_log_prob"), want,
                                rtol=1e-6)


def test_fourier_frequencies_are_drawn_at_init_and_never_train():
    config = tiny_rect_config()
    config.latent_dim, config.model.prior_components = 3, 2
    config.model.prior_type, config.model.prior_hidden = "autoregressive", (4,)
    config.model.prior_fourier_features, config.model.prior_fourier_scale = 5, 0.3
    model = models.build_model(config)
    params = models.init_params(model, config, jax.random.PRNGKey(0))
    frequencies = lambda p: [p["params"][f"prior_conditionals_{i}"]["fourier_frequencies"]
                             for i in range(2)]
    chex.assert_shape(frequencies(params), [(1, 5), (2, 5)])
    # drawn with std 0.3: over 15 draws, well inside [0.1, 0.6]
    assert 0.1 < float(jnp.concatenate([f.ravel() for f in frequencies(params)]).std()) < 0.6
    out = params["params"]["prior_conditionals_1"]["Dense_1"]  # starts at zero weights,
    out["kernel"] = 0.3 * jax.random.normal(jax.random.PRNGKey(2), out["kernel"].shape)
    z = jax.random.normal(jax.random.PRNGKey(1), (7, 3))  # which would stop every gradient
    grads = jax.grad(lambda p: model.apply(p, z, method="prior_log_prob").sum())(params)
    chex.assert_trees_all_equal(frequencies(grads), [jnp.zeros((1, 5)), jnp.zeros((2, 5))])
    assert float(jnp.abs(grads["params"]["prior_conditionals_1"]["Dense_0"]["kernel"]).sum()) > 0
