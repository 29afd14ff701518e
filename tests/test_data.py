import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vaeshapes import data, rng


@pytest.fixture(scope="module")
def rect_split():
    return data.sample_split(data.rect_sample, jax.random.PRNGKey(0), 4000)


def test_rect_sample_shapes_jit_and_nojit():
    key = jax.random.PRNGKey(3)
    image, factors = data.rect_sample(key)
    image_j, factors_j = jax.jit(data.rect_sample)(key)
    chex.assert_shape(image, (10, 10))
    chex.assert_type(image, jnp.int32)
    chex.assert_trees_all_equal((image, factors), (image_j, factors_j))


def test_rect_values_and_single_solid_rectangle(rect_split):
    images = np.asarray(rect_split.images)
    f = {k: np.asarray(v) for k, v in rect_split.factors.items()}
    assert images.min() >= 0 and images.max() <= 9
    for i in range(images.shape[0]):
        img = images[i]
        rows, cols = np.nonzero(img)
        # one colour, and the bounding box is completely filled: one solid rectangle
        assert len(np.unique(img[rows, cols])) == 1
        box = img[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
        assert (box == img[rows[0], cols[0]]).all()
        assert box.size == rows.size
        # factors match the image
        assert img[rows[0], cols[0]] == f["colour"][i]
        assert (rows.min(), cols.min()) == (f["top"][i], f["left"][i])
        assert (rows.max() + 1 - rows.min(), cols.max() + 1 - cols.min()) == (
            f["height"][i], f["width"][i])
        assert (rows.max(), cols.max()) == (f["bottom"][i], f["right"][i])


def test_rect_every_factor_value_reachable(rect_split):
    f = {k: np.asarray(v) for k, v in rect_split.factors.items()}
    assert set(f["colour"]) == set(range(1, 10))
    for name in ("height", "width"):
        assert set(f[name]) == set(range(1, 11))
    for name in ("top", "left", "bottom", "right"):
        assert set(f[name]) == set(range(0, 10))


def test_rect_height_and_top_follow_the_stated_distribution(rect_split):
    f = {k: np.asarray(v) for k, v in rect_split.factors.items()}
    # h ~ U{1..10}: each value has prob 0.1; top | h ~ U{0..10-h}
    freq = np.bincount(f["height"], minlength=11)[1:] / f["height"].size
    np.testing.assert_allclose(freq, 0.1, atol=0.025)
    assert (f["top"] + f["height"] <= 10).all()


def test_rect_entropy_floor_value():
    assert data.rect_entropy_nats() == pytest.approx(9.8233, abs=1e-4)


def test_splits_are_disjoint_draws_and_deterministic(rect_config):
    key = rng.purpose_key(rect_config.seed, "data")
    a = data.build_splits(rect_config.data, key)
    b = data.build_splits(rect_config.data, key)
    chex.assert_trees_all_equal(a, b)
    assert set(a) == {"train", "test"}
    chex.assert_shape(a["train"].images, (rect_config.data.num_train, 10, 10))
    assert not np.array_equal(a["train"].images, a["test"].images)
