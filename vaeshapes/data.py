"""Pure, vmappable data generators and dataset splits.

Every generator is ``sample(key) -> (image, factors)`` with static shapes, so
``jax.vmap(sample)(jax.random.split(key, n))`` builds a dataset in one call.
``factors`` is a dict of int32 scalars: the generative factors (ground truth for
analysis and probes).
"""

from __future__ import annotations

import math
from functools import partial
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp

RECT_SIZE = 10
RECT_NUM_COLOURS = 9  # colours 1..9; 0 is the black background
RECT_NUM_CLASSES = RECT_NUM_COLOURS + 1


class Split(NamedTuple):
    """One dataset split: images [N, H, W(, C)] and a dict of factor arrays [N]."""

    images: jax.Array
    factors: dict[str, jax.Array]


def _axis_mask(start: jax.Array, length: jax.Array, size: int) -> jax.Array:
    """Boolean [size] mask of the indices in [start, start + length)."""
    idx = jnp.arange(size)
    return (idx >= start) & (idx < start + length)


def rect_sample(key: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """One 10x10 int32 image: a solid rectangle of colour 1..9 on background 0.

    h, w ~ U{1..10}, top ~ U{0..10-h}, left ~ U{0..10-w}, colour ~ U{1..9}.
    """
    chex.assert_shape(key, (2,))
    k_colour, k_h, k_w, k_top, k_left = jax.random.split(key, 5)
    colour = jax.random.randint(k_colour, (), 1, RECT_NUM_COLOURS + 1)
    height = jax.random.randint(k_h, (), 1, RECT_SIZE + 1)
    width = jax.random.randint(k_w, (), 1, RECT_SIZE + 1)
    top = jax.random.randint(k_top, (), 0, RECT_SIZE - height + 1)
    left = jax.random.randint(k_left, (), 0, RECT_SIZE - width + 1)
    inside = (_axis_mask(top, height, RECT_SIZE)[:, None]
              & _axis_mask(left, width, RECT_SIZE)[None, :])
    image = jnp.where(inside, colour, 0).astype(jnp.int32)
    factors = dict(colour=colour, top=top, left=left, height=height, width=width,
                   bottom=top + height - 1, right=left + width - 1)
    return image, {k: v.astype(jnp.int32) for k, v in factors.items()}


def rect_entropy_nats() -> float:
    """Exact entropy H(X) of the rect distribution, in nats per image (9.8233).

    Every (colour, h, w, top, left) draws a distinct image, so
    H = ln 9 + 2 * (ln 10 + ln(10!) / 10).
    """
    per_axis = math.log(RECT_SIZE) + math.lgamma(RECT_SIZE + 1) / RECT_SIZE
    return math.log(RECT_NUM_COLOURS) + 2 * per_axis


SHAPES_SIZE = 28
SHAPES_CLASSES = ("circle", "triangle", "square")
MIN_TRIANGLE_AREA = 10.0  # px^2; thinner draws are resampled (no degenerate lines)


def _pixel_grid(size: int) -> tuple[jax.Array, jax.Array]:
    """Pixel-centre coordinates (x = column, y = row), each [size, size] float32."""
    y, x = jnp.meshgrid(jnp.arange(size, dtype=jnp.float32),
                        jnp.arange(size, dtype=jnp.float32), indexing="ij")
    return x, y


def _circle(key: jax.Array):
    """Filled circle: centre x, y ~ U{10..18}, radius ~ U{5..10}; (x-cx)^2+(y-cy)^2 <= r^2."""
    k_c, k_r = jax.random.split(key)
    centre = jax.random.randint(k_c, (2,), 10, 19).astype(jnp.float32)
    radius = jax.random.randint(k_r, (), 5, 11).astype(jnp.float32)
    x, y = _pixel_grid(SHAPES_SIZE)
    mask = jnp.square(x - centre[0]) + jnp.square(y - centre[1]) <= jnp.square(radius)
    return mask, centre, radius, jnp.zeros(()), jnp.zeros((3, 2))


def triangle_mask(vertices: jax.Array) -> jax.Array:
    """[28, 28] mask of the pixels whose unit square touches the triangle [3, 2] (x, y).

    Exact separating-axis test (the square's two axes and the triangle's three edge
    normals), so the shape is always 8-connected, like OpenCV's filled polygon.
    """
    chex.assert_shape(vertices, (3, 2))
    x, y = _pixel_grid(SHAPES_SIZE)
    lo, hi = vertices.min(axis=0), vertices.max(axis=0)
    inside = ((x + 0.5 >= lo[0]) & (x - 0.5 <= hi[0])
              & (y + 0.5 >= lo[1]) & (y - 0.5 <= hi[1]))
    orientation = jnp.sign(_cross(vertices[0], vertices[1], vertices[2]))
    for i in range(3):
        a, b = vertices[i], vertices[(i + 1) % 3]
        nx, ny = -(b[1] - a[1]) * orientation, (b[0] - a[0]) * orientation  # inward normal
        edge = nx * (x - a[0]) + ny * (y - a[1])
        inside &= edge + 0.5 * (jnp.abs(nx) + jnp.abs(ny)) >= 0
    return inside


def _cross(a: jax.Array, b: jax.Array, c: jax.Array) -> jax.Array:
    """z of (b - a) x (c - a): twice the signed area of triangle abc."""
    return (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])


def _triangle(key: jax.Array):
    """Filled triangle, vertices x, y ~ U{5..23}, resampled until area >= 10 px^2."""
    def draw(k):
        return jax.random.randint(k, (3, 2), 5, 24).astype(jnp.float32)

    def too_thin(carry):
        _, v = carry
        return 0.5 * jnp.abs(_cross(v[0], v[1], v[2])) < MIN_TRIANGLE_AREA

    def redraw(carry):
        k, _ = carry
        k, k_v = jax.random.split(k)
        return k, draw(k_v)

    k0, k_v = jax.random.split(key)
    _, vertices = jax.lax.while_loop(too_thin, redraw, (k0, draw(k_v)))
    return (triangle_mask(vertices), vertices.mean(axis=0), jnp.zeros(()), jnp.zeros(()),
            vertices)


def _square(key: jax.Array):
    """Filled square: side s ~ U{10..15}, top-left x, y ~ U{5..23-s}, s+1 pixels a side."""
    k_s, k_xy = jax.random.split(key)
    side = jax.random.randint(k_s, (), 10, 16)
    corner = jax.random.randint(k_xy, (2,), 5, 24 - side)
    x, y = _pixel_grid(SHAPES_SIZE)
    mask = ((x >= corner[0]) & (x <= corner[0] + side)
            & (y >= corner[1]) & (y <= corner[1] + side))
    centre = corner.astype(jnp.float32) + side / 2
    return mask, centre, jnp.zeros(()), side.astype(jnp.float32), jnp.zeros((3, 2))


def shapes_sample_class(key: jax.Array, label: jax.Array):
    """One 28x28x1 binary float image of class ``label`` (0 circle, 1 triangle, 2 square).

    Factors: class, centre_x, centre_y, size (sqrt of the pixel count), area (pixels),
    radius (circles, else 0), side (squares, else 0), vertices [3, 2] (triangles, else 0).
    """
    chex.assert_shape(key, (2,))
    mask, centre, radius, side, vertices = jax.lax.switch(
        label, (_circle, _triangle, _square), key)
    area = mask.sum().astype(jnp.float32)
    factors = {"class": jnp.asarray(label, jnp.int32), "centre_x": centre[0],
               "centre_y": centre[1], "size": jnp.sqrt(area), "area": area,
               "radius": radius, "side": side, "vertices": vertices}
    return mask[..., None].astype(jnp.float32), factors


def shapes_sample(key: jax.Array):
    """One shapes image with class ~ U{circle, triangle, square}."""
    k_label, k_shape = jax.random.split(key)
    return shapes_sample_class(k_shape, jax.random.randint(k_label, (), 0, 3))


class SplitKeys(NamedTuple):
    """A split as the keys that draw it: image i is ``sample(keys[i])`` (with label
    ``labels[i]`` for stratified datasets, else labels is None). Small enough to hold on
    every device, so each one draws only the images of its own shard of a batch."""

    keys: jax.Array  # uint32 [N, 2]
    labels: jax.Array | None  # int32 [N]


def sample_keys(key: jax.Array, n: int) -> SplitKeys:
    """Keys of n i.i.d. samples."""
    chex.assert_shape(key, (2,))
    return SplitKeys(jax.random.split(key, n), None)


def stratified_keys(num_labels: int, key: jax.Array, n: int) -> SplitKeys:
    """Keys of n samples whose labels are balanced (each label n // num_labels or one
    more), in shuffled order: every split made this way is stratified by label."""
    chex.assert_shape(key, (2,))
    k_order, k_samples = jax.random.split(key)
    labels = jax.random.permutation(k_order, jnp.arange(n) % num_labels)
    return SplitKeys(jax.random.split(k_samples, n), labels)


def draw(name: str, split: SplitKeys) -> Split:
    """The images and factors of ``split`` (keys [..., 2], any leading shape)."""
    lead = split.keys.shape[:-1]
    chex.assert_shape(split.keys, (*lead, 2))
    keys = split.keys.reshape(-1, 2)
    if split.labels is None:
        images, factors = jax.vmap(GENERATORS[name])(keys)
    else:
        chex.assert_shape(split.labels, lead)
        images, factors = jax.vmap(STRATIFIED[name][0])(keys, split.labels.reshape(-1))
    unflatten = lambda x: x.reshape(*lead, *x.shape[1:])
    return Split(unflatten(images), jax.tree_util.tree_map(unflatten, factors))


@partial(jax.jit, static_argnums=(0, 2))
def sample_split(sample_fn, key: jax.Array, n: int) -> Split:
    """Draws n i.i.d. samples with ``sample_fn`` (vmapped) from one key."""
    images, factors = jax.vmap(sample_fn)(sample_keys(key, n).keys)
    return Split(images, factors)


@partial(jax.jit, static_argnums=(0, 1, 3))
def stratified_split(sample_class_fn, num_labels: int, key: jax.Array, n: int) -> Split:
    """n label-balanced samples drawn with ``sample_class_fn`` (see stratified_keys)."""
    keys, labels = stratified_keys(num_labels, key, n)
    images, factors = jax.vmap(sample_class_fn)(keys, labels)
    return Split(images, factors)


# Per dataset: generator, image (H, W), and number of pixel classes (0 = binary).
GENERATORS = {"rect": rect_sample, "shapes": shapes_sample}
IMAGE_SHAPES = {"rect": (RECT_SIZE, RECT_SIZE), "shapes": (SHAPES_SIZE, SHAPES_SIZE)}
NUM_CLASSES = {"rect": RECT_NUM_CLASSES, "shapes": 0}
# The categorical factor that labels an image (plots, probes), and its value names.
LABELS = {"rect": ("colour", ("background",) + tuple(f"colour {c}" for c in range(1, 10))),
          "shapes": ("class", SHAPES_CLASSES)}
# Values of the label factor that occur (first, count): the classes of the few-label probe.
LABEL_VALUES = {"rect": (1, RECT_NUM_COLOURS), "shapes": (0, len(SHAPES_CLASSES))}
# Scalar factors that latent analysis relates to latent dimensions (the label one first),
# and the factor whose dimension is edited.
ANALYSIS_FACTORS = {"rect": ("colour", "top", "left", "height", "width"),
                    "shapes": ("class", "centre_x", "centre_y", "size")}
EDIT_FACTOR = {"rect": "height", "shapes": "size"}
# Datasets whose splits are stratified by a label: (sample_class_fn, number of labels).
STRATIFIED = {"shapes": (shapes_sample_class, len(SHAPES_CLASSES))}


SPLIT_NAMES = ("train", "val", "test")


def split_sizes(data_config) -> dict[str, int]:
    """Images per split; empty splits left out."""
    sizes = (data_config.num_train, data_config.num_val, data_config.num_test)
    return {name: n for name, n in zip(SPLIT_NAMES, sizes, strict=True) if n > 0}


def split_keys(name: str, key: jax.Array, n: int) -> SplitKeys:
    """Keys of n samples of dataset ``name`` (label-balanced where it is stratified)."""
    if name in STRATIFIED:
        return stratified_keys(STRATIFIED[name][1], key, n)
    return sample_keys(key, n)


def build_split_keys(data_config, key: jax.Array) -> dict[str, SplitKeys]:
    """Keys of the train/val/test splits from one data key (see build_splits)."""
    return {split: split_keys(data_config.name, jax.random.fold_in(key, SPLIT_NAMES.index(split)),
                              n)
            for split, n in split_sizes(data_config).items()}


def build_splits(data_config, key: jax.Array) -> dict[str, Split]:
    """Train/val/test splits from one data key; each split has its own key.

    Stratified datasets (shapes) get label-balanced splits, i.e. stratified by class.

    The keys are ``fold_in(key, i)`` for train (0), val (1) and test (2), so the
    splits are disjoint draws and adding a split never changes the others.
    """
    return {split: draw_jit(data_config.name, keys) for split, keys in
            build_split_keys(data_config, key).items()}


draw_jit = jax.jit(draw, static_argnums=0)  # draw, compiled once per dataset name


def entropy_floor_nats(data_config) -> float | None:
    """Exact data entropy in nats per image where it is known, else None."""
    return rect_entropy_nats() if data_config.name == "rect" else None
