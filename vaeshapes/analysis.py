"""Latent-space analysis: pure functions on latents and decoded images."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp


def traversal_latents(z0: jax.Array, values: jax.Array) -> jax.Array:
    """Latents [D, V, D]: row d sweeps dimension d over ``values`` [V], others at z0 [D]."""
    chex.assert_rank(z0, 1)
    chex.assert_rank(values, 1)
    d = z0.shape[0]
    grid = jnp.broadcast_to(z0, (d, values.shape[0], d))
    sweep = jnp.eye(d, dtype=bool)[:, None, :]  # [D, 1, D]: which coordinate row d moves
    return jnp.where(sweep, values[None, :, None], grid)


def display_images(logits: jax.Array) -> jax.Array:
    """What to draw for decoder logits [..., H, W, K]: the most likely class per pixel
    (int [..., H, W]) when K > 1, the pixel probability ([..., H, W, 1]) when K = 1."""
    if logits.shape[-1] > 1:
        return jnp.argmax(logits, axis=-1)
    return jax.nn.sigmoid(logits)
