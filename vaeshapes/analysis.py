"""Latent-space analysis: pure functions on latents and decoded images."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax


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


# ---------------------------------------------------------------- factor association

def pearson(latents: jax.Array, factor: jax.Array) -> jax.Array:
    """Pearson r [D] between each latent dimension [N, D] and a factor [N]; 0 where either
    is constant."""
    chex.assert_rank(latents, 2)
    chex.assert_shape(factor, latents.shape[:1])
    a = latents - latents.mean(axis=0)
    b = factor - factor.mean()
    denom = jnp.sqrt((a * a).sum(axis=0) * (b * b).sum())
    return jnp.where(denom > 0, (b @ a) / jnp.where(denom > 0, denom, 1.0), 0.0)


def correlation_ratio(latents: jax.Array, labels: jax.Array, num_values: int) -> jax.Array:
    """Correlation ratio eta [D] in [0, 1] of each latent dimension [N, D] with a
    categorical factor [N] (ints in [0, num_values)): the spread of the per-class means
    relative to the total spread, sqrt(between / (between + within)) -- source 000's
    "which column varies the most between colours", normalised."""
    chex.assert_rank(latents, 2)
    chex.assert_shape(labels, latents.shape[:1])
    onehot = jax.nn.one_hot(labels, num_values)  # [N, C]
    counts = onehot.sum(axis=0)
    means = (onehot.T @ latents) / jnp.maximum(counts, 1.0)[:, None]  # [C, D]
    centred = means - latents.mean(axis=0)
    between = (counts[:, None] * centred ** 2).sum(axis=0) / latents.shape[0]
    total = latents.var(axis=0)
    return jnp.sqrt(jnp.where(total > 0, between / jnp.where(total > 0, total, 1.0), 0.0))


def association_matrix(latents: jax.Array, factors: jax.Array,
                       num_values: tuple[int, ...]) -> jax.Array:
    """Association [F, D] of factors [N, F] with latents [N, D]: the correlation ratio for
    a categorical factor (``num_values[f] > 0`` values), |Pearson r| for an ordinal one (0)."""
    chex.assert_rank([latents, factors], 2)
    chex.assert_equal_shape_prefix([latents, factors], 1)
    chex.assert_shape(factors, (None, len(num_values)))
    rows = [correlation_ratio(latents, factors[:, f].astype(jnp.int32), n) if n
            else jnp.abs(pearson(latents, factors[:, f])) for f, n in enumerate(num_values)]
    return jnp.stack(rows)


def discretize(values: jax.Array, num_bins: int = 20) -> jax.Array:
    """Codes [N] in [0, num_bins) of values [N]: equal-width bins over their range
    (disentanglement_lib's histogram discretisation)."""
    chex.assert_rank(values, 1)
    lo, hi = values.min(), values.max()
    width = jnp.where(hi > lo, (hi - lo) / num_bins, 1.0)
    return jnp.clip(jnp.floor((values - lo) / width), 0, num_bins - 1).astype(jnp.int32)


def discrete_entropy(codes: jax.Array, num_bins: int) -> jax.Array:
    """Plug-in entropy (nats) of codes [N] in [0, num_bins)."""
    chex.assert_rank(codes, 1)
    p = jax.nn.one_hot(codes, num_bins).mean(axis=0)
    return -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0))


def discrete_mutual_info(a: jax.Array, b: jax.Array, num_bins: int) -> jax.Array:
    """Plug-in mutual information (nats) between codes a [N] and b [N] in [0, num_bins)."""
    chex.assert_rank([a, b], 1)
    chex.assert_equal_shape([a, b])
    joint = jax.nn.one_hot(a, num_bins).T @ jax.nn.one_hot(b, num_bins) / a.shape[0]
    outer = joint.sum(axis=1, keepdims=True) * joint.sum(axis=0, keepdims=True)
    ratio = jnp.where(joint > 0, joint / jnp.where(outer > 0, outer, 1.0), 1.0)
    return jnp.sum(joint * jnp.log(ratio))


def mutual_info_matrix(latents: jax.Array, factors: jax.Array,
                       num_bins: int = 20) -> tuple[jax.Array, jax.Array]:
    """MI [F, D] (nats) between discretised factors [N, F] and latents [N, D], and the
    factors' entropies [F]; both discretised into ``num_bins`` equal-width bins."""
    chex.assert_rank([latents, factors], 2)
    chex.assert_equal_shape_prefix([latents, factors], 1)
    bin_columns = jax.vmap(lambda v: discretize(v, num_bins), in_axes=1, out_axes=1)
    z_codes, f_codes = bin_columns(latents), bin_columns(factors)
    mi = jax.vmap(lambda f: jax.vmap(lambda z: discrete_mutual_info(f, z, num_bins),
                                     in_axes=1)(z_codes), in_axes=1)(f_codes)
    entropy = jax.vmap(lambda f: discrete_entropy(f, num_bins), in_axes=1)(f_codes)
    return mi, entropy


def quantile_discretize(values: jax.Array, num_bins: int = 10) -> jax.Array:
    """Codes [N] in [0, num_bins) of values [N]: bins holding equal counts, bounded at
    the interior quantiles (robust to the long tails of learned codes)."""
    chex.assert_rank(values, 1)
    edges = jnp.quantile(values, jnp.linspace(0.0, 1.0, num_bins + 1)[1:-1])
    return jnp.searchsorted(edges, values).astype(jnp.int32)


def latent_dependence(latents: jax.Array, num_bins: int = 10) -> jax.Array:
    """Plug-in mutual information [D, D] (nats) between each pair of latent dimensions
    [N, D], each discretised into ``num_bins`` equal-count bins; 0 on the diagonal. Its
    bias, about (num_bins - 1)^2 / 2N, is the level of independent dimensions."""
    chex.assert_rank(latents, 2)
    codes = jax.vmap(lambda v: quantile_discretize(v, num_bins), in_axes=1, out_axes=1)(
        latents)
    pair = lambda a: jax.vmap(lambda b: discrete_mutual_info(a, b, num_bins), in_axes=1)(
        codes)
    mi = jax.vmap(pair, in_axes=1)(codes)
    return jnp.where(jnp.eye(latents.shape[1], dtype=bool), 0.0, mi)


def dependency_chain(dependence: np.ndarray) -> tuple[int, ...]:
    """An order of the D latent dimensions that puts dependent ones side by side, from
    their pairwise dependence [D, D]: start with the most dependent pair, then add, at
    either end, the remaining dimension most dependent on that end. An order for the
    autoregressive prior (``model.prior_order``) that needs no labels."""
    dependence = np.asarray(dependence, np.float64)
    d = dependence.shape[0]
    chex.assert_shape(dependence, (d, d))
    scores = np.where(np.eye(d, dtype=bool), -np.inf, dependence)
    if d == 1:
        return (0,)
    i, j = np.unravel_index(np.argmax(scores), scores.shape)
    chain = [int(min(i, j)), int(max(i, j))]
    while len(chain) < d:
        _, dim, front = max((scores[k, end], k, end == chain[0])
                            for k in range(d) if k not in chain
                            for end in (chain[0], chain[-1]))
        chain = [dim, *chain] if front else [*chain, dim]
    return tuple(chain)


def mutual_info_gap(mi: jax.Array, entropy: jax.Array) -> jax.Array:
    """Per-factor MIG [F]: (largest - second largest MI over dims) / H(factor)."""
    chex.assert_rank(mi, 2)
    chex.assert_shape(entropy, mi.shape[:1])
    top2 = -jnp.sort(-mi, axis=1)[:, :2]
    return (top2[:, 0] - top2[:, 1]) / jnp.maximum(entropy, 1e-12)


# ---------------------------------------------------------------- editing and samples

def constant_norm_edit(z: jax.Array, dim: int | jax.Array, delta: jax.Array) -> jax.Array:
    """z [D] with z[dim] += delta and the other dimensions rescaled so |z| is unchanged
    (source 000's edit); once |z[dim]| alone exceeds |z|, the others go to 0."""
    chex.assert_rank(z, 1)
    chex.assert_rank(delta, 0)
    is_dim = jnp.arange(z.shape[0]) == dim
    edited = jnp.where(is_dim, z + delta, 0.0).sum()
    others = jnp.where(is_dim, 0.0, z)
    others_norm = jnp.linalg.norm(others)
    room = jnp.sqrt(jnp.maximum(jnp.sum(z * z) - edited ** 2, 0.0))
    scale = jnp.where(others_norm > 0, room / jnp.where(others_norm > 0, others_norm, 1.0), 0.0)
    return jnp.where(is_dim, edited, others * scale)


def edit_sweep(z_rows: jax.Array, dim: int | jax.Array, deltas: jax.Array) -> jax.Array:
    """Latents [N, V, D]: each row of z_rows [N, D] edited at constant norm by each delta [V]."""
    chex.assert_rank([z_rows, deltas], [2, 1])
    edit_row = lambda z: jax.vmap(lambda d: constant_norm_edit(z, dim, d))(deltas)
    return jax.vmap(edit_row)(z_rows)


def average_ranks(x: jax.Array) -> jax.Array:
    """Ranks [N] of x [N] (0-based), ties given their average rank."""
    chex.assert_rank(x, 1)
    less = (x[None, :] < x[:, None]).sum(axis=1)
    equal = (x[None, :] == x[:, None]).sum(axis=1)
    return less + (equal - 1) / 2.0


def spearman(x: jax.Array, y: jax.Array) -> jax.Array:
    """Spearman rank correlation of x [N] and y [N]; 0 where either is constant."""
    chex.assert_rank([x, y], 1)
    chex.assert_equal_shape([x, y])
    rx, ry = average_ranks(x), average_ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denom = jnp.sqrt((rx * rx).sum() * (ry * ry).sum())
    return jnp.where(denom > 0, (rx * ry).sum() / jnp.where(denom > 0, denom, 1.0), 0.0)


def rect_height(image: jax.Array) -> jax.Array:
    """Number of rows of a class image [H, W] that hold a non-background pixel."""
    chex.assert_rank(image, 2)
    return (image > 0).any(axis=1).sum().astype(jnp.float32)


def blob_size(image: jax.Array) -> jax.Array:
    """sqrt of the number of 'on' pixels (probability > 0.5) of an image [H, W, 1]."""
    chex.assert_rank(image, 3)
    return jnp.sqrt((image > 0.5).sum().astype(jnp.float32))


def is_single_blob(image: jax.Array) -> jax.Array:
    """Whether an image [H, W, 1] has exactly one 8-connected blob of pixels > 0.5."""
    chex.assert_rank(image, 3)
    return num_blobs(image[..., 0] > 0.5) == 1


def is_valid_rect(image: jax.Array) -> jax.Array:
    """Whether a class image [H, W] is one solid axis-aligned rectangle of one colour on
    background 0."""
    chex.assert_rank(image, 2)
    on = image > 0
    rows, cols = on.any(axis=1), on.any(axis=0)
    box = rows.sum() * cols.sum()  # rows/cols spanned, if they are contiguous
    contiguous = (_runs(rows) == 1) & (_runs(cols) == 1)
    one_colour = jnp.where(on, image, 0).max() == jnp.where(on, image, image.max() + 1).min()
    return contiguous & (on.sum() == box) & one_colour


def _runs(flags: jax.Array) -> jax.Array:
    """Number of maximal runs of True in a boolean vector."""
    return (flags & ~jnp.concatenate([jnp.zeros(1, bool), flags[:-1]])).sum()


def num_blobs(mask: jax.Array) -> jax.Array:
    """Number of 8-connected components of a boolean mask [H, W]."""
    chex.assert_rank(mask, 2)
    h, w = mask.shape
    ids = jnp.where(mask, jnp.arange(1, h * w + 1).reshape(h, w), 0)

    def spread(labels):  # every on pixel takes the largest label among its 8 neighbours
        padded = jnp.pad(labels, 1)
        windows = [padded[i:i + h, j:j + w] for i in range(3) for j in range(3)]
        return jnp.where(mask, jnp.max(jnp.stack(windows), axis=0), 0)

    def changed(carry):
        old, new = carry
        return jnp.any(old != new)

    _, labels = jax.lax.while_loop(changed, lambda c: (c[1], spread(c[1])), (ids, spread(ids)))
    return jnp.sum(mask & (labels == ids))  # one root (largest id) per component


# Per dataset: how the edited factor is measured on a decoded image, and what makes a
# decoded prior sample valid (display images: class [H, W] for rect, [H, W, 1] for shapes).
MEASURE_EDITED = {"rect": rect_height, "shapes": blob_size}
IS_VALID_SAMPLE = {"rect": is_valid_rect, "shapes": is_single_blob}


def interpolation_latents(z_a: jax.Array, z_b: jax.Array, num: int) -> jax.Array:
    """num latents [num, D] evenly spaced from z_a [D] to z_b [D], both ends included."""
    chex.assert_rank([z_a, z_b], 1)
    t = jnp.linspace(0.0, 1.0, num)[:, None]
    return (1.0 - t) * z_a + t * z_b


# ---------------------------------------------------------------- few-label probes

def sample_per_class(key: jax.Array, labels: jax.Array, num_classes: int, k: int) -> jax.Array:
    """Indices [num_classes * k]: k random examples of each class of labels [N] (a class
    with fewer than k examples is topped up with examples of other classes)."""
    chex.assert_rank(labels, 1)
    u = jax.random.uniform(key, labels.shape)
    pick = lambda c: jnp.argsort(jnp.where(labels == c, u, 2.0))[:k]
    return jax.vmap(pick)(jnp.arange(num_classes)).reshape(-1)


def fit_softmax_probe(features: jax.Array, labels: jax.Array, num_classes: int,
                      steps: int = 1000, learning_rate: float = 0.1,
                      l2: float = 1e-3) -> tuple[jax.Array, jax.Array]:
    """Multinomial logistic regression (weights [F, C], bias [C]) on features [n, F] and
    labels [n] in [0, num_classes), L2 penalty on the weights: full-batch Adam with a
    cosine-decayed step, run to convergence (gradient norm ~1e-3 at the defaults) so the
    result is the penalised optimum, not an early-stopped fit."""
    chex.assert_rank(features, 2)
    chex.assert_shape(labels, features.shape[:1])
    params = (jnp.zeros((features.shape[1], num_classes)), jnp.zeros(num_classes))
    optimizer = optax.adam(optax.cosine_decay_schedule(learning_rate, steps))

    def objective(p):
        logits = features @ p[0] + p[1]
        nll = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
        return nll + l2 * jnp.sum(p[0] ** 2)

    def step(carry, _):
        p, state = carry
        updates, state = optimizer.update(jax.grad(objective)(p), state)
        return (optax.apply_updates(p, updates), state), None

    (params, _), _ = jax.lax.scan(step, (params, optimizer.init(params)), None, length=steps)
    return params


def standardize(features: jax.Array, reference: jax.Array) -> jax.Array:
    """features [N, F] centred and scaled by the per-column mean and std of reference [M, F]
    (constant columns are only centred)."""
    chex.assert_rank([features, reference], 2)
    std = reference.std(axis=0)
    return (features - reference.mean(axis=0)) / jnp.where(std > 0, std, 1.0)


def probe_accuracy(key: jax.Array, pool_x: jax.Array, pool_y: jax.Array, test_x: jax.Array,
                   test_y: jax.Array, num_classes: int, k: int, draws: int,
                   **fit_kwargs) -> jax.Array:
    """Test accuracy of a softmax probe fit on k labelled pool examples per class, averaged
    over ``draws`` random draws of those examples. Features are standardised with the
    statistics of the whole (unlabelled) pool. ``fit_kwargs`` go to fit_softmax_probe."""
    chex.assert_rank([pool_x, test_x], 2)
    chex.assert_shape(pool_y, pool_x.shape[:1])
    chex.assert_shape(test_y, test_x.shape[:1])
    pool_std, test_std = standardize(pool_x, pool_x), standardize(test_x, pool_x)

    def one_draw(k_draw):
        idx = sample_per_class(k_draw, pool_y, num_classes, k)
        w, b = fit_softmax_probe(pool_std[idx], pool_y[idx], num_classes, **fit_kwargs)
        return jnp.mean(jnp.argmax(test_std @ w + b, axis=-1) == test_y)

    return jax.vmap(one_draw)(jax.random.split(key, draws)).mean()


def pixel_features(images: jax.Array, num_classes: int) -> jax.Array:
    """Raw-pixel probe features [N, P]: one-hot pixel classes (categorical images [N, H, W],
    ``num_classes`` > 0) or the pixel values (binary images [N, H, W, 1])."""
    n = images.shape[0]
    if num_classes:
        chex.assert_rank(images, 3)
        return jax.nn.one_hot(images, num_classes).reshape(n, -1)
    chex.assert_rank(images, 4)
    return images.reshape(n, -1).astype(jnp.float32)
