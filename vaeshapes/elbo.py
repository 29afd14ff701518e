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


def gaussian_entropy(logvar: jax.Array) -> jax.Array:
    """Entropy of N(mu, diag(exp(logvar))), summed over the last axis: [..., D] -> [...]."""
    return 0.5 * jnp.sum(jnp.log(2 * jnp.pi) + 1.0 + logvar, axis=-1)


def kl_to_prior(model, params, z: jax.Array, mu: jax.Array, logvar: jax.Array) -> jax.Array:
    """KL(q(z|x) || p(z)) per image [B], from mu, logvar [B, D] and draws z [..., B, D] of
    q: closed form for the fixed N(0, I) prior (z unused); for the model's learned prior
    the unbiased estimate -H(q) - log p(z), averaged over z's leading axes."""
    chex.assert_rank(mu, 2)
    chex.assert_equal_shape([mu, logvar])
    chex.assert_equal(z.shape[-2:], mu.shape)
    if not model.prior_components:
        return kl_divergence(mu, logvar)
    log_prior = model.apply(params, z, method="prior_log_prob").reshape(-1, mu.shape[0])
    return -gaussian_entropy(logvar) - log_prior.mean(axis=0)


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
    """Single-sample ELBO terms per image: ``recon`` (-log p(x|z)) and ``kl``, each [B],
    and with the fixed N(0, I) prior ``kl_per_dim`` [B, D].

    ``noise_std`` > 0 adds N(0, noise_std^2) to z before decoding (the modified VAE).
    """
    k_z, k_noise = jax.random.split(key)
    mu, logvar = model.apply(params, x, method="encode")
    z = reparameterize(k_z, mu, logvar)
    kl = kl_to_prior(model, params, z, mu, logvar)
    if noise_std:
        z = z + noise_std * jax.random.normal(k_noise, z.shape, z.dtype)
    logits = model.apply(params, z, method="decode")
    terms = dict(recon=-log_likelihood(likelihood, logits, x), kl=kl)
    chex.assert_shape(list(terms.values()), (x.shape[0],))
    if model.prior_components:
        return terms
    return dict(terms, kl_per_dim=kl_per_dim(mu, logvar))


def loss(terms: dict[str, jax.Array], beta: float | jax.Array,
         free_bits: float = 0.0) -> jax.Array:
    """Batch mean of recon + beta * kl (the negative ELBO when beta = 1).

    ``free_bits`` > 0 (nats per latent dimension; Kingma et al. 2016): each dimension's
    batch-mean KL counts as at least ``free_bits``, so a dimension below it gets no
    gradient pushing it further towards the prior.
    """
    if free_bits:
        kl = jnp.maximum(terms["kl_per_dim"].mean(axis=0), free_bits).sum()
        return terms["recon"].mean() + beta * kl
    return jnp.mean(terms["recon"] + beta * terms["kl"])


def log_normal(x: jax.Array, mean: jax.Array | float, logvar: jax.Array | float) -> jax.Array:
    """log N(x; mean, diag(exp(logvar))), summed over the last axis: [..., D] -> [...].

    Scaled by the precision exp(-logvar), not divided by exp(logvar): where exp(logvar)
    overflows, a division's gradient is inf / inf = NaN."""
    return -0.5 * jnp.sum(jnp.log(2 * jnp.pi) + logvar + jnp.square(x - mean) * jnp.exp(-logvar),
                          axis=-1)


def log_normal_pairwise(x: jax.Array, means: jax.Array, logvars: jax.Array) -> jax.Array:
    """log N(x; means[k], diag(exp(logvars[k]))) for every x [..., D] and every component k
    of means, logvars [M, D]: -> [..., M]. Equal to ``log_normal(x[..., None, :], means,
    logvars)``, but summed one dimension at a time over [..., M] arrays with the components
    on the minor axis (10x faster on a CPU at M = 8192, D = 5, and its gradients with it;
    ``benchmarks/prior_density.py``). The square is not expanded into matmuls: that
    cancels catastrophically in float32 for narrow components."""
    chex.assert_rank([means, logvars], 2)
    chex.assert_equal_shape([means, logvars])
    chex.assert_axis_dimension(x, -1, means.shape[1])
    means_t, precisions_t = means.T, jnp.exp(-logvars.T)  # [D, M]
    quad = sum(jnp.square(x[..., d, None] - means_t[d]) * precisions_t[d]
               for d in range(means.shape[1]))
    return -0.5 * (quad + jnp.sum(logvars, axis=-1) + means.shape[1] * jnp.log(2 * jnp.pi))


def standard_normal_log_prob(z: jax.Array) -> jax.Array:
    """log N(z; 0, I): [..., D] -> [...]."""
    return log_normal(z, 0.0, 0.0)


def log_importance_weights(log_lik: jax.Array, log_prior: jax.Array, z: jax.Array,
                           mu: jax.Array, logvar: jax.Array,
                           beta: float | jax.Array = 1.0) -> jax.Array:
    """log p(x|z) + beta (log p(z) - log q(z|x)), q = N(mu, exp(logvar)): log_lik and
    log_prior [...], z [..., D] -> [...]; at beta = 1 the importance weights of log p(x)."""
    chex.assert_equal_shape([log_lik, log_prior, z[..., 0]])
    return log_lik + beta * (log_prior - log_normal(z, mu, logvar))


def iwae_terms(model, params, x: jax.Array, key: jax.Array, *, likelihood: str,
               num_samples: int, beta: float | jax.Array = 1.0,
               elbo_encoder: bool = False) -> dict[str, jax.Array]:
    """K-sample terms per image, each [B]: ``bound``, the IWAE bound on log p(x) (Burda et
    al. 2015; with beta != 1 the weights' log p(z) / q(z|x) is scaled by beta), ``recon``,
    -log p(x|z) averaged over the K samples, ``kl`` (``kl_to_prior``), and ``objective``,
    the value to maximise: the bound, or with ``elbo_encoder`` a surrogate equal to it
    whose gradient trains the decoder on the bound and the encoder on the ELBO
    (PIWAE, Rainforth et al. 2018).
    """
    mu, logvar = model.apply(params, x, method="encode")
    eps = jax.random.normal(key, (num_samples, *mu.shape), mu.dtype)
    z = mu + jnp.exp(0.5 * logvar) * eps
    repeated = jnp.broadcast_to(x, (num_samples, *x.shape)).reshape(-1, *x.shape[1:])

    def log_lik_at(decoder_params, z):
        logits = model.apply(decoder_params, z.reshape(-1, mu.shape[-1]), method="decode")
        return log_likelihood(likelihood, logits, repeated).reshape(num_samples, -1)

    log_prior = lambda prior_params, z: model.apply(prior_params, z, method="prior_log_prob")
    if elbo_encoder:
        sg = jax.lax.stop_gradient
        log_lik = log_lik_at(params, sg(z))
        log_w = log_importance_weights(log_lik, log_prior(params, sg(z)), sg(z), sg(mu),
                                       sg(logvar), beta)
        kl = kl_to_prior(model, sg(params), z, mu, logvar)
        elbo = log_lik_at(sg(params), z).mean(axis=0) - beta * kl
    else:
        log_lik = log_lik_at(params, z)
        log_w = log_importance_weights(log_lik, log_prior(params, z), z, mu, logvar, beta)
        kl = kl_to_prior(model, params, z, mu, logvar)
    bound = jax.nn.logsumexp(log_w, axis=0) - jnp.log(num_samples)
    objective = bound + elbo - jax.lax.stop_gradient(elbo) if elbo_encoder else bound
    terms = dict(objective=objective, bound=bound, recon=-log_lik.mean(axis=0), kl=kl)
    chex.assert_shape(list(terms.values()), (x.shape[0],))
    return terms


def largest_divisor_at_most(n: int, limit: int) -> int:
    return max(d for d in range(1, min(n, limit) + 1) if n % d == 0)


def importance_weighted_bound(log_likelihood_fn, mu: jax.Array, logvar: jax.Array,
                              key: jax.Array, num_samples: int, chunk: int = 100,
                              log_prior_fn=standard_normal_log_prob) -> jax.Array:
    """The IWAE bound on log p(x) (Burda et al. 2015), for one image: [] from mu, logvar [D].

    log (1/K) sum_k p(x|z_k) p(z_k) / q(z_k|x), z_k ~ q(z|x) = N(mu, exp(logvar)). Its
    expectation is the ELBO at K = 1 and rises to log p(x) as K grows.
    ``log_likelihood_fn`` maps z [n, D] to log p(x|z) [n], ``log_prior_fn`` to log p(z)
    [n]; they are called on chunks of at most ``chunk`` samples (lax.map), so K = 1000
    fits in memory.
    """
    chex.assert_rank(mu, 1)
    chex.assert_equal_shape([mu, logvar])
    size = largest_divisor_at_most(num_samples, chunk)
    eps = jax.random.normal(key, (num_samples // size, size, mu.shape[0]), mu.dtype)

    def log_weights(e):
        z = mu + jnp.exp(0.5 * logvar) * e
        return log_importance_weights(log_likelihood_fn(z), log_prior_fn(z), z, mu, logvar)

    return jax.nn.logsumexp(jax.lax.map(log_weights, eps)) - jnp.log(num_samples)
