"""Source 003's dataset, model and information estimate."""

from collections import deque

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.conftest import load_config
from vaeshapes import analysis, data, evaluation, models

N = 600


@pytest.fixture(scope="module")
def shapes_split():
    return data.stratified_split(data.shapes_sample_class, 3, jax.random.PRNGKey(0), N)


def _num_components(mask: np.ndarray) -> int:
    """8-connected components of a boolean image."""
    seen = np.zeros_like(mask, bool)
    count = 0
    for start in zip(*np.nonzero(mask), strict=True):
        if seen[start]:
            continue
        count += 1
        queue = deque([start])
        seen[start] = True
        while queue:
            y, x = queue.popleft()
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    p = (y + dy, x + dx)
                    if (0 <= p[0] < mask.shape[0] and 0 <= p[1] < mask.shape[1]
                            and mask[p] and not seen[p]):
                        seen[p] = True
                        queue.append(p)
    return count


def test_images_are_binary_with_one_connected_shape(shapes_split):
    images = np.asarray(shapes_split.images)
    chex.assert_shape(images, (N, 28, 28, 1))
    assert set(np.unique(images)) <= {0.0, 1.0}
    for img in images[..., 0]:
        assert _num_components(img > 0) == 1


def test_split_is_class_balanced_and_deterministic(shapes_split):
    counts = np.bincount(np.asarray(shapes_split.factors["class"]), minlength=3)
    assert counts.tolist() == [N // 3] * 3
    again = data.stratified_split(data.shapes_sample_class, 3, jax.random.PRNGKey(0), N)
    chex.assert_trees_all_equal(shapes_split, again)


def test_full_config_splits_are_70_15_15_and_stratified():
    config = load_config("shapes")
    sizes = (config.data.num_train, config.data.num_val, config.data.num_test)
    assert sizes == (10_500, 2_250, 2_250)
    for n in sizes:
        assert n % 3 == 0  # stratified_split gives each class exactly n / 3


def test_circle_and_square_parameters_within_source_ranges(shapes_split):
    f = {k: np.asarray(v) for k, v in shapes_split.factors.items()}
    images = np.asarray(shapes_split.images)[..., 0]
    circles, squares = f["class"] == 0, f["class"] == 2
    assert set(f["radius"][circles]) <= set(range(5, 11))
    assert set(f["side"][squares]) <= set(range(10, 16))
    for i in np.nonzero(squares)[0]:
        rows, cols = np.nonzero(images[i])
        side = f["side"][i]
        assert rows.max() - rows.min() == side and cols.max() - cols.min() == side
        assert images[i].sum() == (side + 1) ** 2  # s + 1 pixels a side, filled
        assert rows.min() >= 5 and rows.max() <= 23 and cols.min() >= 5 and cols.max() <= 23
    for i in np.nonzero(circles)[0]:
        r, cx, cy = f["radius"][i], f["centre_x"][i], f["centre_y"][i]
        assert 10 <= cx <= 18 and 10 <= cy <= 18
        y, x = np.mgrid[:28, :28]
        np.testing.assert_array_equal(images[i] > 0, (x - cx) ** 2 + (y - cy) ** 2 <= r * r)


def test_triangles_inside_bounds_and_not_degenerate(shapes_split):
    f = {k: np.asarray(v) for k, v in shapes_split.factors.items()}
    images = np.asarray(shapes_split.images)[..., 0]
    for i in np.nonzero(f["class"] == 1)[0]:
        v = f["vertices"][i]
        assert v.min() >= 5 and v.max() <= 23
        area = 0.5 * abs((v[1, 0] - v[0, 0]) * (v[2, 1] - v[0, 1])
                         - (v[1, 1] - v[0, 1]) * (v[2, 0] - v[0, 0]))
        assert area >= data.MIN_TRIANGLE_AREA
        rows, cols = np.nonzero(images[i])
        # conservative raster: at most one pixel beyond the vertices' bounding box
        assert rows.min() >= v[:, 1].min() - 1 and rows.max() <= v[:, 1].max() + 1
        assert cols.min() >= v[:, 0].min() - 1 and cols.max() <= v[:, 0].max() + 1
        # every pixel whose centre is strictly inside the triangle is on
        y, x = np.mgrid[:28, :28]
        signs = [np.sign((v[(k + 1) % 3, 0] - v[k, 0]) * (y - v[k, 1])
                         - (v[(k + 1) % 3, 1] - v[k, 1]) * (x - v[k, 0])) for k in range(3)]
        strictly_inside = ((signs[0] == signs[1]) & (signs[1] == signs[2]) & (signs[0] != 0))
        assert images[i][strictly_inside].all()


def test_shapes_sample_jit_matches_eager():
    key = jax.random.PRNGKey(7)
    chex.assert_trees_all_equal(data.shapes_sample(key), jax.jit(data.shapes_sample)(key))


def test_shapes_model_param_count_and_shapes():
    config = load_config("shapes")
    model = models.build_model(config)
    # shapes only (tracing, no compile): the numerics are tested in test_layers.py
    params = jax.eval_shape(lambda k: models.init_params(model, config, k),
                            jax.random.PRNGKey(0))
    assert models.count_params(params) == 153_185
    x = jnp.zeros((3, 28, 28, 1))
    mu, logvar = jax.eval_shape(lambda p: model.apply(p, x, method="encode"), params)
    chex.assert_shape([mu, logvar], (3, 8))
    decoded = jax.eval_shape(lambda p: model.apply(p, jnp.zeros((3, 8)), method="decode"),
                             params)
    chex.assert_shape(decoded, (3, 28, 28, 1))


def test_information_estimate_matches_hand_computed_value():
    # latent dim 0: mu ~ N(0, 4), sigma^2 = 1 -> Var(z) = 5; dim 1: carries nothing
    n = 200_000
    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    mu = jnp.stack([2.0 * jax.random.normal(k1, (n,)), jnp.zeros(n)], axis=1)
    logvar = jnp.zeros((n, 2))
    z = mu + jax.random.normal(k2, (n, 2))
    info = analysis.information_bits(mu, logvar, z, noise_std=0.5)
    want = [0.5 * np.log2(1 + 5 / 0.25), 0.5 * np.log2(1 + 1 / 0.25)]  # 2.196, 1.161
    np.testing.assert_allclose(info["per_dim_bits"], want, rtol=0.01)
    # signal Var(mu) = 4, noise 1 + 0.25: the uninformative dimension scores 0
    want_mu = [0.5 * np.log2(1 + 4 / 1.25), 0.0]
    np.testing.assert_allclose(info["per_dim_bits_mu"], want_mu, rtol=0.01, atol=1e-3)
    assert float(info["total_bits"]) == pytest.approx(sum(want), rel=0.01)


def test_round_trip_encodes_the_thresholded_image():
    config = load_config("shapes")
    model = models.build_model(config)
    params = models.init_params(model, config, jax.random.PRNGKey(0))
    probs = jax.random.uniform(jax.random.PRNGKey(1), (2, 28, 28, 1))
    trip = jax.jit(lambda p, x: evaluation.round_trip(p, x, model=model))
    out = trip(params, probs)
    chex.assert_shape(out, probs.shape)
    chex.assert_trees_all_close(out, trip(params, (probs > 0.5).astype(jnp.float32)))
    assert not np.allclose(out, trip(params, probs**2))  # fewer pixels above 0.5
