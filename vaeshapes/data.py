"""Pure, vmappable data generators and dataset splits.

Every generator is ``sample(key) -> (image, factors)`` with static shapes, so
``jax.vmap(sample)(jax.random.split(key, n))`` builds a dataset in one call.
``factors`` is a dict of int32 scalars: the generative factors (ground truth for
analysis and probes).
"""

from __future__ import annotations

import math
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


def sample_split(sample_fn, key: jax.Array, n: int) -> Split:
    """Draws n i.i.d. samples with ``sample_fn`` (vmapped) from one key."""
    chex.assert_shape(key, (2,))
    images, factors = jax.vmap(sample_fn)(jax.random.split(key, n))
    return Split(images, factors)


# Per dataset: generator, image (H, W), and number of pixel classes (0 = binary).
GENERATORS = {"rect": rect_sample}
IMAGE_SHAPES = {"rect": (RECT_SIZE, RECT_SIZE)}
NUM_CLASSES = {"rect": RECT_NUM_CLASSES}


def build_splits(data_config, key: jax.Array) -> dict[str, Split]:
    """Train/val/test splits from one data key; each split has its own key.

    The keys are ``fold_in(key, i)`` for train (0), val (1) and test (2), so the
    splits are disjoint draws and adding a split never changes the others.
    """
    sample_fn = GENERATORS[data_config.name]
    sizes = {"train": data_config.num_train, "val": data_config.num_val,
             "test": data_config.num_test}
    return {name: sample_split(sample_fn, jax.random.fold_in(key, i), n)
            for i, (name, n) in enumerate(sizes.items()) if n > 0}


def entropy_floor_nats(data_config) -> float | None:
    """Exact data entropy in nats per image where it is known, else None."""
    return rect_entropy_nats() if data_config.name == "rect" else None
