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


def gaussian_channel_bits(signal_var: jax.Array, noise_var: jax.Array) -> jax.Array:
    """Capacity of a Gaussian channel per dimension: 1/2 log2(1 + signal / noise)."""
    return 0.5 * jnp.log2(1.0 + signal_var / noise_var)


def information_bits(mu: jax.Array, logvar: jax.Array, z: jax.Array,
                     noise_std: float) -> dict[str, jax.Array]:
    """Gaussian-channel information estimates from a test set's encodings [N, D].

    ``per_dim_bits`` is the source's estimate: signal Var(z_d) over the set (z sampled
    from the posterior, so it counts the posterior's own noise as signal), noise
    ``noise_std^2``. ``per_dim_bits_mu`` uses signal Var(mu_d) and noise
    E[sigma_d^2] + noise_std^2: what actually crosses the noisy channel.
    """
    chex.assert_rank(mu, 2)
    chex.assert_equal_shape([mu, logvar, z])
    noise_var = noise_std ** 2
    per_dim = gaussian_channel_bits(z.var(axis=0), noise_var)
    per_dim_mu = gaussian_channel_bits(mu.var(axis=0), jnp.exp(logvar).mean(axis=0) + noise_var)
    return dict(per_dim_bits=per_dim, total_bits=per_dim.sum(),
                per_dim_bits_mu=per_dim_mu, total_bits_mu=per_dim_mu.sum())


def most_informative_dims(per_dim_bits: jax.Array, k: int = 2) -> list[int]:
    """Indices of the k dimensions with the most bits, most first."""
    return [int(i) for i in jnp.argsort(-per_dim_bits)[:k]]


def grid_latents(latent_dim: int, dims: tuple[int, int], values: jax.Array) -> jax.Array:
    """Latents [V, V, D] on a grid over two dimensions (rows: dims[0]), others at 0."""
    chex.assert_rank(values, 1)
    v = values.shape[0]
    z = jnp.zeros((v, v, latent_dim))
    z = z.at[:, :, dims[0]].set(values[:, None])
    return z.at[:, :, dims[1]].set(values[None, :])
