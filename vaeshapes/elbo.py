"""Reparameterisation, KL, log-likelihoods and the ELBO: pure functions.

All terms are per image, in nats, summed over pixels and latent dimensions;
callers choose the reduction (mean over a batch, per-pixel units, ...).
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

LIKELIHOODS = ("categorical", "bernoulli")


def reparameterize(key: jax.Array, mu: jax.Array, logvar: jax.Array) -> jax.Array:
    """z = mu + exp(logvar / 2) * eps, eps ~ N(0, I); shapes [B, D]."""
    chex.assert_rank(mu, 2)
    chex.assert_equal_shape([mu, logvar])
    eps = jax.random.normal(key, mu.shape, mu.dtype)
    return mu + jnp.exp(0.5 * logvar) * eps


def kl_per_dim(mu: jax.Array, logvar: jax.Array) -> jax.Array:
    """KL(N(mu, exp(logvar)) || N(0, 1)) per latent dimension: [B, D] -> [B, D]."""
    chex.assert_rank(mu, 2)
    chex.assert_equal_shape([mu, logvar])
    return 0.5 * (jnp.exp(logvar) + jnp.square(mu) - 1.0 - logvar)


def kl_divergence(mu: jax.Array, logvar: jax.Array) -> jax.Array:
    """KL(q(z|x) || N(0, I)) summed over latent dimensions: [B, D] -> [B]."""
    return kl_per_dim(mu, logvar).sum(axis=-1)


def categorical_log_likelihood(logits: jax.Array, x: jax.Array) -> jax.Array:
    """log p(x|z) for class images: logits [B, H, W, K], x int [B, H, W] -> [B]."""
    chex.assert_rank(logits, 4)
    chex.assert_shape(x, logits.shape[:3])
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    picked = jnp.take_along_axis(log_probs, x[..., None].astype(jnp.int32), axis=-1)
    return picked.sum(axis=(1, 2, 3))


def bernoulli_log_likelihood(logits: jax.Array, x: jax.Array) -> jax.Array:
    """log p(x|z) for binary images from logits: [B, H, W, 1] each -> [B].

    Stable form: x * l - softplus(l) = x log sigmoid(l) + (1 - x) log(1 - sigmoid(l)).
    """
    chex.assert_rank(logits, 4)
    chex.assert_equal_shape([logits, x])
    return (x * logits - jax.nn.softplus(logits)).sum(axis=(1, 2, 3))


def log_likelihood(likelihood: str, logits: jax.Array, x: jax.Array) -> jax.Array:
    """Dispatches to the decoder likelihood named in the config."""
    if likelihood == "categorical":
        return categorical_log_likelihood(logits, x)
    if likelihood == "bernoulli":
        return bernoulli_log_likelihood(logits, x)
    raise ValueError(f"unknown likelihood {likelihood!r}; expected one of {LIKELIHOODS}")


def elbo_terms(model, params, x: jax.Array, key: jax.Array, *, likelihood: str,
               noise_std: float = 0.0) -> dict[str, jax.Array]:
    """Single-sample ELBO terms per image: ``recon`` (-log p(x|z)) and ``kl``, each [B].

    ``noise_std`` > 0 adds N(0, noise_std^2) to z before decoding (the modified VAE).
    """
    k_z, k_noise = jax.random.split(key)
    mu, logvar = model.apply(params, x, method="encode")
    z = reparameterize(k_z, mu, logvar)
    if noise_std:
        z = z + noise_std * jax.random.normal(k_noise, z.shape, z.dtype)
    logits = model.apply(params, z, method="decode")
    terms = dict(recon=-log_likelihood(likelihood, logits, x), kl=kl_divergence(mu, logvar))
    chex.assert_shape(list(terms.values()), (x.shape[0],))
    return terms


def loss(terms: dict[str, jax.Array], beta: float) -> jax.Array:
    """Batch mean of recon + beta * kl (the negative ELBO when beta = 1)."""
    return jnp.mean(terms["recon"] + beta * terms["kl"])
