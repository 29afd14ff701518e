"""Flax linen convolutional VAEs, built from the config's ``model`` section.

One module, ``ConvVAE``, covers both sources: the layer lists come from the config.
Use it functionally: ``model.apply(params, x, method="encode")``,
``model.apply(params, z, method="decode")`` and, for the prior p(z),
``method="prior_log_prob"`` and ``method="prior_sample"``.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vaeshapes import data, elbo, layers

CONV_IMPLS = {
    "patches": (layers.PatchConv, layers.PatchConvTranspose),
    "rows": (partial(layers.PatchConv, fold_width=True),
             partial(layers.PatchConvTranspose, fold_width=True)),
    "xla": (partial(nn.Conv, padding="SAME", kernel_init=layers.lecun_normal),
            partial(nn.ConvTranspose, padding="SAME", kernel_init=layers.lecun_normal)),
}


PRIOR_TYPES = ("mixture", "autoregressive")
# config.model.prior_order for the dependency chain of a trained model's codes
# (training.resolve_prior_order); on the command line --config.model.prior_order=chain.
CHAIN_ORDER = ("chain",)
MIN_PRIOR_LOGVAR = -9.0  # the autoregressive prior's components: std >= 0.011


class ConditionalMixture(nn.Module):
    """An MLP from z_<d [..., d] to a 1-d mixture of ``components`` Gaussians over z_d:
    logits, means and log-variances [..., components]. Its output layer starts at zero
    weights, so every conditional starts as a fixed mixture (means ~ N(0, 1)).

    ``fourier_features`` = F > 0 feeds the MLP sin and cos of F random projections of
    z_<d besides z_<d itself (Tancik et al. 2020), with frequencies ~ N(0,
    ``fourier_scale``^2) drawn at init and never trained: features that vary on the
    scale of the codes' clusters, so the conditional can switch between clusters."""

    hidden: Sequence[int]
    components: int
    fourier_features: int = 0
    fourier_scale: float = 1.0

    @nn.compact
    def __call__(self, z_before: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        h = z_before
        if self.fourier_features:
            frequencies = self.param("fourier_frequencies",
                                     nn.initializers.normal(self.fourier_scale),
                                     (z_before.shape[-1], self.fourier_features))
            angles = z_before @ jax.lax.stop_gradient(frequencies)
            h = jnp.concatenate([z_before, jnp.sin(angles), jnp.cos(angles)], axis=-1)
        for width in self.hidden:
            h = nn.relu(nn.Dense(width)(h))
        out = nn.Dense(3 * self.components, kernel_init=nn.initializers.zeros,
                       bias_init=nn.initializers.normal(1.0))(h)
        logits, means, raw_logvars = jnp.split(out, 3, axis=-1)
        # a smooth floor: an MLP can otherwise drive a variance to 0 and the loss to NaN
        logvars = MIN_PRIOR_LOGVAR + jax.nn.softplus(raw_logvars - MIN_PRIOR_LOGVAR)
        return logits, means, logvars


class ConvVAE(nn.Module):
    """Conv encoder -> (mu, logvar); dense + transposed-conv decoder -> logits.

    Attributes:
      latent_dim: size of z.
      num_classes: pixel classes for a categorical image (int input [B, H, W],
        embedded with ``embed_dim``); 0 for a binary image (float input [B, H, W, 1]).
      embed_dim: embedding size for categorical pixels (unused when binary).
      encoder_convs: (features, stride) of each 3x3 SAME conv, ReLU after each.
      encoder_dense: widths of ReLU dense layers between flatten and the heads.
      decoder_dense: widths of ReLU dense layers between z and the dense layer that
        fills ``decoder_input_shape``.
      decoder_input_shape: (h, w, c) that the decoder's first dense layer fills.
      decoder_dense_relu: whether a ReLU follows that dense layer.
      decoder_convs: (features, stride) of each 3x3 SAME transposed conv, ReLU after
        each; a final stride-1 transposed conv maps to the output logits.
      conv_impl: "patches" (matmuls over patches, fast on CPU), "rows" (matmuls over
        whole rows with banded weights, faster for small images) or "xla" (flax's
        nn.Conv / nn.ConvTranspose). Same function, same parameters.
      prior_components: 0 for the fixed prior N(0, I); M > 0 for a learned prior of
        ``prior_type`` with M components.
      prior_type: "mixture": M diagonal Gaussians over z (means, log-variances and
        weights are parameters); "autoregressive": p(z) = prod_d p(z_d | z_<d), each
        factor a 1-d mixture of M Gaussians whose parameters an MLP with hidden widths
        ``prior_hidden`` computes from z_<d (free parameters for z_1).
      prior_fourier_features, prior_fourier_scale: random Fourier features of z_<d for
        the autoregressive prior's MLPs (``ConditionalMixture``); 0 features: none.
      prior_order: the order in which the autoregressive prior factorises z, a
        permutation of range(latent_dim) (its first entry is the dimension drawn first);
        empty: 0, 1, ..., D-1. (The config's CHAIN_ORDER is replaced by a permutation
        before a model is built: ``training.resolve_prior_order``.)
    """

    latent_dim: int
    num_classes: int
    embed_dim: int
    encoder_convs: Sequence[tuple[int, int]]
    encoder_dense: Sequence[int]
    decoder_input_shape: tuple[int, int, int]
    decoder_dense_relu: bool
    decoder_convs: Sequence[tuple[int, int]]
    conv_impl: str = "patches"
    decoder_dense: Sequence[int] = ()
    prior_components: int = 0
    prior_type: str = "mixture"
    prior_hidden: Sequence[int] = ()
    prior_fourier_features: int = 0
    prior_fourier_scale: float = 1.0
    prior_order: Sequence[int] = ()

    @property
    def autoregressive_prior(self) -> bool:
        return bool(self.prior_components) and self.prior_type == "autoregressive"

    @property
    def out_channels(self) -> int:
        return self.num_classes if self.num_classes else 1

    def setup(self):
        if self.num_classes:
            self.embed = nn.Embed(self.num_classes, self.embed_dim)
        conv, conv_t = CONV_IMPLS[self.conv_impl]
        self.enc_convs = [conv(f, (3, 3), strides=(s, s)) for f, s in self.encoder_convs]
        self.enc_dense = [nn.Dense(f) for f in self.encoder_dense]
        self.fc_mu = nn.Dense(self.latent_dim)
        self.fc_logvar = nn.Dense(self.latent_dim)
        h, w, c = self.decoder_input_shape
        self.dec_dense = [nn.Dense(f) for f in self.decoder_dense]
        self.fc_decode = nn.Dense(h * w * c)
        self.dec_convs = [conv_t(f, (3, 3), strides=(s, s)) for f, s in self.decoder_convs]
        self.dec_out = conv_t(self.out_channels, (3, 3))
        if self.autoregressive_prior:
            self.prior_first = self.param("prior_first", nn.initializers.normal(1.0),
                                          (3, self.prior_components))
            self.prior_conditionals = [
                ConditionalMixture(self.prior_hidden, self.prior_components,
                                   self.prior_fourier_features, self.prior_fourier_scale)
                for _ in range(1, self.latent_dim)]
        elif self.prior_components:
            shape = (self.prior_components, self.latent_dim)
            self.prior_means = self.param("prior_means", nn.initializers.normal(1.0), shape)
            self.prior_logvars = self.param("prior_logvars", nn.initializers.zeros, shape)
            self.prior_logits = self.param("prior_logits", nn.initializers.zeros,
                                           (self.prior_components,))

    def encode(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Images [B, H, W] (int classes) or [B, H, W, 1] (binary) -> mu, logvar [B, D]."""
        if self.num_classes:
            chex.assert_rank(x, 3)
            h = self.embed(x)
        else:
            chex.assert_rank(x, 4)
            h = x.astype(jnp.float32)
        for conv in self.enc_convs:
            h = nn.relu(conv(h))
        h = h.reshape(h.shape[0], -1)
        for dense in self.enc_dense:
            h = nn.relu(dense(h))
        mu, logvar = self.fc_mu(h), self.fc_logvar(h)
        chex.assert_shape([mu, logvar], (x.shape[0], self.latent_dim))
        return mu, logvar

    def decode(self, z: jax.Array) -> jax.Array:
        """Latents [B, D] -> logits [B, H, W, num_classes] (or [B, H, W, 1] if binary)."""
        chex.assert_shape(z, (None, self.latent_dim))
        h = z
        for dense in self.dec_dense:
            h = nn.relu(dense(h))
        h = self.fc_decode(h)
        if self.decoder_dense_relu:
            h = nn.relu(h)
        h = h.reshape(z.shape[0], *self.decoder_input_shape)
        for conv in self.dec_convs:
            h = nn.relu(conv(h))
        return self.dec_out(h)

    def prior_log_prob(self, z: jax.Array) -> jax.Array:
        """log p(z) of latents [..., D] -> [...]."""
        chex.assert_axis_dimension(z, -1, self.latent_dim)
        if not self.prior_components:
            return elbo.standard_normal_log_prob(z)
        if self.autoregressive_prior:
            z = z[..., self._order]
            return sum(self._conditional_log_prob(z, d) for d in range(self.latent_dim))
        log_weights = jax.nn.log_softmax(self.prior_logits)
        per_component = elbo.log_normal_pairwise(z, self.prior_means, self.prior_logvars)
        return jax.nn.logsumexp(per_component + log_weights, axis=-1)

    def prior_sample(self, key: jax.Array, num: int) -> jax.Array:
        """``num`` draws from p(z): [num, D]."""
        if not self.prior_components:
            return jax.random.normal(key, (num, self.latent_dim))
        if self.autoregressive_prior:
            z = jnp.zeros((num, self.latent_dim))
            for d, k in enumerate(jax.random.split(key, self.latent_dim)):
                z = z.at[:, d].set(_sample_mixture_1d(k, *self._conditional(z[:, :d], d)))
            return z[:, inverse_permutation(self._order)]
        k_component, k_noise = jax.random.split(key)
        eps = jax.random.normal(k_noise, (num, self.latent_dim))
        c = jax.random.categorical(k_component, self.prior_logits, shape=(num,))
        return self.prior_means[c] + jnp.exp(0.5 * self.prior_logvars[c]) * eps

    @property
    def _order(self) -> tuple[int, ...]:
        return tuple(self.prior_order) or tuple(range(self.latent_dim))

    def _conditional(self, z_before: jax.Array, d: int):
        """The autoregressive prior's mixture over z_d given z_<d [..., d] (in the prior's
        order): logits, means, log-variances [..., M]."""
        chex.assert_axis_dimension(z_before, -1, d)
        if d == 0:
            return tuple(jnp.broadcast_to(p, (*z_before.shape[:-1], self.prior_components))
                         for p in self.prior_first)
        return self.prior_conditionals[d - 1](z_before)

    def _conditional_log_prob(self, z: jax.Array, d: int) -> jax.Array:
        """log p(z_d | z_<d) of latents [..., D] -> [...]."""
        logits, means, logvars = self._conditional(z[..., :d], d)
        per_component = elbo.log_normal(z[..., d, None, None], means[..., None],
                                        logvars[..., None])
        return jax.nn.logsumexp(per_component + jax.nn.log_softmax(logits), axis=-1)

    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Logits decoded from the posterior mean, with mu and logvar (used for init; it
        scores mu under the prior so that init creates the prior's layers too)."""
        mu, logvar = self.encode(x)
        self.prior_log_prob(mu)
        return self.decode(mu), mu, logvar


def inverse_permutation(order: Sequence[int]) -> tuple[int, ...]:
    """The permutation that undoes ``order``: z[..., order][..., inverse] == z."""
    return tuple(int(i) for i in np.argsort(order))


def _sample_mixture_1d(key: jax.Array, logits: jax.Array, means: jax.Array,
                       logvars: jax.Array) -> jax.Array:
    """One draw from each 1-d mixture of logits, means, log-variances [N, M] -> [N]."""
    chex.assert_rank(logits, 2)
    chex.assert_equal_shape([logits, means, logvars])
    k_component, k_noise = jax.random.split(key)
    c = jax.random.categorical(k_component, logits)[:, None]
    pick = lambda a: jnp.take_along_axis(a, c, axis=-1)[:, 0]
    return pick(means) + jnp.exp(0.5 * pick(logvars)) * jax.random.normal(k_noise, c.shape[:1])


def build_model(config) -> ConvVAE:
    """The ConvVAE described by ``config.model`` and ``config.latent_dim``."""
    m = config.model
    if tuple(m.prior_order) == CHAIN_ORDER:
        raise ValueError(f"config.model.prior_order = {CHAIN_ORDER}: resolve it first "
                         "(training.resolve_prior_order)")
    return ConvVAE(
        latent_dim=config.latent_dim,
        num_classes=m.num_classes,
        embed_dim=m.embed_dim,
        encoder_convs=tuple(tuple(c) for c in m.encoder_convs),
        encoder_dense=tuple(m.encoder_dense),
        decoder_input_shape=tuple(m.decoder_input_shape),
        decoder_dense_relu=m.decoder_dense_relu,
        decoder_convs=tuple(tuple(c) for c in m.decoder_convs),
        conv_impl=m.conv_impl,
        decoder_dense=tuple(m.decoder_dense),
        prior_components=m.prior_components,
        prior_type=m.prior_type,
        prior_hidden=tuple(m.prior_hidden),
        prior_fourier_features=m.prior_fourier_features,
        prior_fourier_scale=m.prior_fourier_scale,
        prior_order=tuple(m.prior_order),
    )


def encode_split(model, params, images: jax.Array, batch_size: int):
    """Posterior means and log-variances [N, D] of images [N, H, W(, 1)], encoded
    batch_size at a time."""
    chex.assert_rank(images, {3, 4})
    encode = lambda x: model.apply(params, x[None], method="encode")
    mu, logvar = jax.lax.map(encode, images, batch_size=batch_size)
    return mu[:, 0], logvar[:, 0]


def input_shape(config) -> tuple[int, ...]:
    """Shape of one input image: (H, W) for categorical, (H, W, 1) for binary."""
    h, w = data.IMAGE_SHAPES[config.data.name]
    return (h, w) if config.model.num_classes else (h, w, 1)


def init_params(model: ConvVAE, config, key: jax.Array):
    """Fresh parameters for ``model`` from ``key``."""
    dtype = jnp.int32 if config.model.num_classes else jnp.float32
    x = jnp.zeros((1, *input_shape(config)), dtype)
    return model.init(key, x)


def count_params(params) -> int:
    """Total number of scalars in a parameter pytree."""
    return int(sum(x.size for x in jax.tree_util.tree_leaves(params)))


def forward_flops(config) -> int:
    """Multiply-adds x 2 of one image's forward pass (encode, then decode one z), counted
    from the architecture: convolutions per output pixel (transposed ones per input
    pixel, so none on the zeros of a dilated input), dense layers, no element-wise ops.
    Forward + backward is ~3x this (gradients for the inputs and the weights)."""
    m = config.model
    h, w = data.IMAGE_SHAPES[config.data.name]
    channels = m.embed_dim if m.num_classes else 1
    macs = 0
    for features, stride in m.encoder_convs:
        h, w = -(-h // stride), -(-w // stride)
        macs += h * w * 9 * channels * features
        channels = features
    mlp_macs, width = _dense_macs(h * w * channels, m.encoder_dense)
    macs += mlp_macs + 2 * width * config.latent_dim  # mu and logvar heads
    h, w, channels = m.decoder_input_shape
    mlp_macs, width = _dense_macs(config.latent_dim, m.decoder_dense)
    macs += mlp_macs + width * h * w * channels
    out_channels = m.num_classes if m.num_classes else 1
    for features, stride in (*m.decoder_convs, (out_channels, 1)):
        macs += h * w * 9 * channels * features
        h, w, channels = h * stride, w * stride, features
    return 2 * macs


def _dense_macs(width: int, widths) -> tuple[int, int]:
    """Multiply-adds of a stack of dense layers from ``width`` inputs, and its output width."""
    macs = 0
    for features in widths:
        macs += width * features
        width = features
    return macs, width
