"""Latent analysis on synthetic latents where the right answer is known."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.test_shapes import _num_components
from vaeshapes import analysis, data

N = 4000


@pytest.fixture(scope="module")
def rect_split():
    return data.sample_split(data.rect_sample, jax.random.PRNGKey(0), N)


def rect_factors(split):
    return jnp.stack([split.factors[f].astype(jnp.float32)
                      for f in data.ANALYSIS_FACTORS["rect"]], axis=1)


NUM_VALUES = (10, 0, 0, 0, 0)  # colour is categorical, the others ordinal


def test_latents_copying_factors_are_found_with_score_one(rect_split):
    factors = rect_factors(rect_split)
    noise = jax.random.normal(jax.random.PRNGKey(1), (N, 3))
    # dims: noise, width, colour, noise, top, left, noise, height (a scaled copy)
    latents = jnp.stack([noise[:, 0], factors[:, 4], factors[:, 0], noise[:, 1],
                         factors[:, 1], factors[:, 2], noise[:, 2], -3.0 * factors[:, 3]], 1)
    assoc = jax.jit(analysis.association_matrix, static_argnums=2)(latents, factors, NUM_VALUES)
    chex.assert_shape(assoc, (5, 8))
    np.testing.assert_array_equal(np.argmax(assoc, axis=1), [2, 4, 5, 7, 1])
    np.testing.assert_allclose(assoc.max(axis=1), 1.0, atol=1e-5)
    assert float(assoc[:, [0, 3, 6]].max()) < 0.1  # noise dims associate with nothing

    mi, entropy = analysis.mutual_info_matrix(latents, factors)
    np.testing.assert_allclose(mi[[0, 1, 2, 3, 4], [2, 4, 5, 7, 1]], entropy, rtol=1e-5)
    # rect's factors are dependent (top < 10 - height), so MIG stays below 1 here
    assert 0.5 < float(analysis.mutual_info_gap(mi, entropy).min()) < 0.95


def test_copies_of_independent_factors_have_mig_near_one():
    keys = jax.random.split(jax.random.PRNGKey(9), 3)
    factors = jnp.stack([jax.random.randint(k, (N,), 0, n).astype(jnp.float32)
                         for k, n in zip(keys, (3, 10, 16), strict=True)], axis=1)
    noise = jax.random.normal(jax.random.PRNGKey(10), (N, 2))
    latents = jnp.concatenate([noise[:, :1], 0.1 * factors[:, ::-1], noise[:, 1:]], axis=1)
    mi, entropy = analysis.mutual_info_matrix(latents, factors)
    np.testing.assert_array_equal(np.argmax(mi, axis=1), [3, 2, 1])
    assert float(analysis.mutual_info_gap(mi, entropy).mean()) > 0.97


def test_independent_noise_has_mig_near_zero(rect_split):
    factors = rect_factors(rect_split)
    latents = jax.random.normal(jax.random.PRNGKey(2), (N, 8))
    mi, entropy = analysis.mutual_info_matrix(latents, factors)
    assert float(analysis.mutual_info_gap(mi, entropy).mean()) < 0.02
    assoc = analysis.association_matrix(latents, factors, NUM_VALUES)
    assert float(assoc.max()) < 0.1


def test_correlation_ratio_matches_numpy():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 500)
    latents = rng.normal(size=(500, 3)) + labels[:, None] * np.array([0.0, 0.5, 2.0])
    eta = analysis.correlation_ratio(jnp.asarray(latents, jnp.float32), jnp.asarray(labels), 6)
    means = np.stack([latents[labels == c].mean(0) for c in range(4)])
    counts = np.bincount(labels)
    between = (counts[:, None] * (means - latents.mean(0)) ** 2).sum(0) / 500
    np.testing.assert_allclose(eta, np.sqrt(between / latents.var(0)), rtol=1e-4)
    assert eta[0] < eta[1] < eta[2]


def test_discrete_information_identities():
    a = jax.random.randint(jax.random.PRNGKey(3), (5000,), 0, 7)
    b = jax.random.randint(jax.random.PRNGKey(4), (5000,), 0, 7)
    h = analysis.discrete_entropy(a, 20)
    np.testing.assert_allclose(h, np.log(7), rtol=1e-2)
    np.testing.assert_allclose(analysis.discrete_mutual_info(a, a, 20), h, rtol=1e-5)
    assert float(analysis.discrete_mutual_info(a, b, 20)) < 0.01
    codes = analysis.discretize(jnp.linspace(-1.0, 1.0, 100), 20)
    assert int(codes.min()) == 0 and int(codes.max()) == 19
    np.testing.assert_array_equal(analysis.discretize(jnp.ones(5), 20), 0)


@pytest.mark.parametrize("jit", [False, True])
def test_latent_dependence_finds_the_dependent_pairs_and_the_chain_joins_them(jit):
    # dims 1 and 3 share a 9-valued factor (a rotated pair), dim 2 is a non-monotonic
    # function of dim 0, dim 4 is independent of all
    k = jax.random.split(jax.random.PRNGKey(5), 4)
    colour = jax.random.randint(k[0], (N,), 0, 9).astype(jnp.float32)
    other = jax.random.normal(k[1], (N,))
    z0 = jax.random.normal(k[2], (N,))
    z = jnp.stack([z0, colour + 0.3 * other, jnp.abs(z0), colour - 0.3 * other,
                   jax.random.normal(k[3], (N,))], axis=1)
    dependence_fn = jax.jit(analysis.latent_dependence) if jit else analysis.latent_dependence
    dependence = dependence_fn(z)
    chex.assert_shape(dependence, (5, 5))
    chex.assert_trees_all_close(dependence, dependence.T)
    np.testing.assert_array_equal(np.diag(dependence), 0.0)
    assert float(dependence[1, 3]) > 1.0 and float(dependence[0, 2]) > 1.0
    bias = (10 - 1) ** 2 / (2 * N)  # the plug-in estimate's bias for independent dims
    for i, j in [(0, 1), (0, 3), (0, 4), (1, 4), (2, 4), (3, 4)]:
        assert float(dependence[i, j]) < 3 * bias
    chain = analysis.dependency_chain(dependence)
    assert sorted(chain) == [0, 1, 2, 3, 4]
    assert abs(chain.index(1) - chain.index(3)) == 1
    assert abs(chain.index(0) - chain.index(2)) == 1
    codes = analysis.quantile_discretize(jnp.arange(100.0))
    np.testing.assert_array_equal(np.bincount(np.asarray(codes)), np.full(10, 10))


def test_dependency_chain_starts_with_the_strongest_pair_and_grows_at_its_ends():
    m = np.zeros((5, 5))
    for (i, j), v in {(2, 4): 0.9, (0, 4): 0.5, (1, 2): 0.4, (0, 3): 0.3, (1, 3): 0.2}.items():
        m[i, j] = m[j, i] = v
    # (2, 4); 0 joins 4's end (0.5); 1 joins 2's end (0.4); 3 joins 0's end (0.3)
    assert analysis.dependency_chain(m) == (1, 2, 4, 0, 3)
    assert analysis.dependency_chain(np.zeros((1, 1))) == (0,)


@pytest.mark.parametrize("jit", [False, True])
def test_constant_norm_edit_keeps_the_norm(jit):
    edit = jax.jit(analysis.constant_norm_edit) if jit else analysis.constant_norm_edit
    z = jnp.array([0.5, -1.0, 2.0, 0.3])
    for delta in (-1.0, 0.0, 0.7):
        out = edit(z, 1, jnp.float32(delta))
        np.testing.assert_allclose(jnp.linalg.norm(out), jnp.linalg.norm(z), rtol=1e-6)
        np.testing.assert_allclose(out[1], z[1] + delta, rtol=1e-6)
        # the other dims keep their direction
        others = np.delete(np.asarray(out), 1)
        np.testing.assert_allclose(others / np.linalg.norm(others),
                                   np.delete(np.asarray(z), 1) / np.linalg.norm(
                                       np.delete(np.asarray(z), 1)), rtol=1e-5)
    far = edit(z, 1, jnp.float32(-5.0))  # |z[1]| alone exceeds |z|: the others vanish
    np.testing.assert_allclose(np.delete(np.asarray(far), 1), 0.0)
    sweep = analysis.edit_sweep(jnp.stack([z, 2 * z]), 1, jnp.linspace(-1.0, 1.0, 5))
    chex.assert_shape(sweep, (2, 5, 4))


def test_spearman_with_ties():
    x = jnp.arange(6.0)
    np.testing.assert_allclose(analysis.spearman(x, x ** 3), 1.0, rtol=1e-6)
    np.testing.assert_allclose(analysis.spearman(x, -x), -1.0, rtol=1e-6)
    assert float(analysis.spearman(x, jnp.ones(6))) == 0.0
    y = jnp.array([1.0, 1.0, 2.0, 2.0, 2.0, 5.0])
    np.testing.assert_allclose(analysis.average_ranks(y), [0.5, 0.5, 3.0, 3.0, 3.0, 5.0])
    rx, ry = np.arange(6.0), np.array([0.5, 0.5, 3.0, 3.0, 3.0, 5.0])
    np.testing.assert_allclose(analysis.spearman(x, y), np.corrcoef(rx, ry)[0, 1], rtol=1e-5)


def test_rect_measures_and_validity(rect_split):
    images = rect_split.images[:300]
    heights = jax.vmap(analysis.rect_height)(images)
    np.testing.assert_array_equal(heights, rect_split.factors["height"][:300])
    assert bool(jax.jit(jax.vmap(analysis.is_valid_rect))(images).all())
    img = np.asarray(images[0])
    top, left = int(rect_split.factors["top"][0]), int(rect_split.factors["left"][0])
    bad = {"empty": np.zeros_like(img), "second colour": img.copy(),
           "stray pixel": img.copy(), "two rectangles": np.zeros_like(img),
           "L shape": np.zeros_like(img)}
    bad["second colour"][top, left] = img[top, left] % 9 + 1
    bad["stray pixel"][(top + 5) % 10, (left + 5) % 10] = 0 if img[
        (top + 5) % 10, (left + 5) % 10] else img[top, left]
    bad["two rectangles"][0:2, 0:2] = 3
    bad["two rectangles"][5:7, 0:2] = 3
    bad["L shape"][0:3, 0] = 4
    bad["L shape"][2, 0:3] = 4
    for name, image in bad.items():
        assert not bool(analysis.is_valid_rect(jnp.asarray(image))), name


@pytest.mark.parametrize("jit", [False, True])
def test_num_blobs_matches_breadth_first_search(jit):
    count = jax.jit(analysis.num_blobs) if jit else analysis.num_blobs
    rng = np.random.default_rng(5)
    for density in (0.2, 0.45, 0.6):
        for _ in range(5):
            mask = rng.random((12, 12)) < density
            assert int(count(jnp.asarray(mask))) == _num_components(mask)


def test_shapes_measures_and_validity():
    split = data.sample_split(data.shapes_sample, jax.random.PRNGKey(6), 60)
    np.testing.assert_allclose(jax.vmap(analysis.blob_size)(split.images),
                               split.factors["size"], rtol=1e-6)
    assert bool(jax.vmap(analysis.is_single_blob)(split.images).all())
    two = split.images[0].at[0, 0, 0].set(1.0).at[27, 27, 0].set(1.0)
    assert not bool(analysis.is_single_blob(two))


def test_probe_separable_clusters_beat_noise():
    key = jax.random.PRNGKey(7)
    labels = jnp.arange(600) % 3
    centres = 4.0 * jax.random.normal(key, (3, 5))
    clusters = centres[labels] + jax.random.normal(jax.random.fold_in(key, 1), (600, 5))
    noise = jax.random.normal(jax.random.fold_in(key, 2), (600, 5))
    acc = lambda x, k: float(analysis.probe_accuracy(
        jax.random.PRNGKey(8), x[:300], labels[:300], x[300:], labels[300:], 3, k, 4))
    assert acc(clusters, 5) > 0.95
    assert abs(acc(noise, 5) - 1 / 3) < 0.1
    idx = analysis.sample_per_class(key, labels, 3, 4)
    chex.assert_shape(idx, (12,))
    np.testing.assert_array_equal(labels[idx], np.repeat(np.arange(3), 4))
    assert len(set(np.asarray(idx).tolist())) == 12


def test_pixel_features_and_interpolation(rect_split):
    feats = analysis.pixel_features(rect_split.images[:5], 10)
    chex.assert_shape(feats, (5, 1000))
    np.testing.assert_array_equal(feats.sum(axis=1), 100)
    chex.assert_shape(analysis.pixel_features(jnp.zeros((5, 28, 28, 1)), 0), (5, 784))
    path = analysis.interpolation_latents(jnp.zeros(3), jnp.ones(3), 5)
    chex.assert_shape(path, (5, 3))
    np.testing.assert_allclose(np.asarray(path)[[0, -1]], [[0, 0, 0], [1, 1, 1]])
