"""Convolutions as matmuls: same function and parameters as flax's layers.

XLA's CPU backend runs small, strided and transposed convolutions (and their
gradients) far below its matmul speed. These layers compute exactly what
``nn.Conv`` / ``nn.ConvTranspose`` with SAME padding compute, as shifted slices
concatenated along channels and one matmul per output phase. With ``fold_width``,
stride-1 convolutions (and each phase of a transposed one) fold the image width into
the channels instead: one matmul over whole rows with a banded weight matrix, ~W/3
times the arithmetic but a handful of large ops, which is faster for small images.
Parameters have the same names, shapes and initialisers, so checkpoints are
interchangeable.
"""

from __future__ import annotations

import math

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


def lecun_normal(key: jax.Array, shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
    """``nn.initializers.lecun_normal()`` (truncated normal, fan-in of ``shape``), value for
    value, but drawn flat and reshaped: XLA:CPU compiles a 4-D draw ~10x slower (~2.5 s
    per conv kernel), and threefry's bits depend only on the flat index."""
    fan_in = math.prod(shape[:-1])
    stddev = jnp.sqrt(jnp.array(1.0 / fan_in, dtype)) / jnp.array(.87962566103423978, dtype)
    flat = jax.random.truncated_normal(key, -2, 2, (math.prod(shape),), dtype)
    return flat.reshape(shape) * stddev


def same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """(low, high) padding of a SAME convolution along one axis (XLA's convention)."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def conv_transpose_pads(kernel: int, stride: int) -> tuple[int, int]:
    """(low, high) padding of the dilated input in a SAME ``lax.conv_transpose``."""
    total = kernel + stride - 2
    low = kernel - 1 if stride > kernel - 1 else -(-total // 2)
    return low, total - low


def _shifted(x: jax.Array, dy: int, dx: int) -> jax.Array:
    """x[:, i + dy, j + dx] for every (i, j), zero outside: [B, H, W, C] -> same shape."""
    h, w = x.shape[1:3]
    xp = jnp.pad(x, ((0, 0), (max(-dy, 0), max(dy, 0)), (max(-dx, 0), max(dx, 0)), (0, 0)))
    y0, x0 = max(dy, 0), max(dx, 0)
    return xp[:, y0:y0 + h, x0:x0 + w]


def shifted_matmul_sum(x: jax.Array, kernel: jax.Array,
                       taps: list[tuple[int, int, int, int]]) -> jax.Array:
    """sum over taps (ti, tj, dy, dx) of x[:, i + dy, j + dx] @ kernel[ti, tj].

    x [B, H, W, Ci], kernel [kh, kw, Ci, Co] -> [B, H, W, Co]. Shifting commutes with
    the per-pixel matmul, so it shifts whichever side is narrower: the inputs
    (one matmul over concatenated patches) or the outputs (one matmul to every tap).
    """
    chex.assert_rank([x, kernel], 4)
    ci, co = kernel.shape[2:]
    chex.assert_axis_dimension(x, 3, ci)
    if ci <= co:
        patches = jnp.concatenate([_shifted(x, dy, dx) for _, _, dy, dx in taps], axis=-1)
        return patches @ jnp.concatenate([kernel[ti, tj] for ti, tj, _, _ in taps], axis=0)
    weights = jnp.concatenate([kernel[ti, tj] for ti, tj, _, _ in taps], axis=1)
    per_tap = (x @ weights).reshape(*x.shape[:3], len(taps), co)
    return sum(_shifted(per_tap[..., k, :], dy, dx) for k, (_, _, dy, dx) in enumerate(taps))


def band(size: int, offsets: list[int]) -> np.ndarray:
    """0/1 [len(offsets), size, size]: entry [k, a, b] is 1 where a = b + offsets[k]."""
    a, b = np.arange(size)[:, None], np.arange(size)[None, :]
    return np.stack([(a == b + d) for d in offsets]).astype(np.float32)


def tap_conv(x: jax.Array, kernel: jax.Array, row_taps: list[tuple[int, int]],
             col_taps: list[tuple[int, int]], fold_width: bool = False) -> jax.Array:
    """sum over row taps (ti, dy) and column taps (tj, dx) of x[:, i + dy, j + dx] @
    kernel[ti, tj]: x [B, H, W, Ci], kernel [kh, kw, Ci, Co] -> [B, H, W, Co].

    ``fold_width``: the column taps become a banded [W*Ci, W*Co] matrix per kernel row,
    so the image is a column of rows with W*Ci channels (same sums, fewer and larger ops).
    """
    chex.assert_rank([x, kernel], 4)
    if not fold_width:
        taps = [(ti, tj, dy, dx) for ti, dy in row_taps for tj, dx in col_taps]
        return shifted_matmul_sum(x, kernel, taps)
    b, h, w, ci = x.shape
    kh, co = kernel.shape[0], kernel.shape[3]
    columns = kernel[:, [tj for tj, _ in col_taps]]  # [kh, taps, Ci, Co]
    banded = jnp.einsum("kab,ykio->yaibo", band(w, [dx for _, dx in col_taps]), columns)
    rows = shifted_matmul_sum(x.reshape(b, h, 1, w * ci),
                              banded.reshape(kh, 1, w * ci, w * co),
                              [(ti, 0, dy, 0) for ti, dy in row_taps])
    return rows.reshape(b, h, w, co)


def conv2d(x: jax.Array, kernel: jax.Array, bias: jax.Array, stride: int,
           fold_width: bool = False) -> jax.Array:
    """SAME conv, NHWC: x [B, H, W, Ci], kernel [kh, kw, Ci, Co] -> [B, H/s, W/s, Co].
    ``fold_width`` applies to stride 1 (see ``tap_conv``); strided convs use patches."""
    chex.assert_rank([x, kernel], 4)
    kh, kw, ci, co = kernel.shape
    chex.assert_axis_dimension(x, 3, ci)
    h, w = x.shape[1:3]
    (ht, hb), (wl, wr) = same_pads(h, kh, stride), same_pads(w, kw, stride)
    if stride == 1:
        return tap_conv(x, kernel, [(i, i - ht) for i in range(kh)],
                        [(j, j - wl) for j in range(kw)], fold_width) + bias
    xp = jnp.pad(x, ((0, 0), (ht, hb), (wl, wr), (0, 0)))
    ho, wo = -(-h // stride), -(-w // stride)
    patches = [xp[:, i:i + (ho - 1) * stride + 1:stride, j:j + (wo - 1) * stride + 1:stride]
               for i in range(kh) for j in range(kw)]
    return jnp.concatenate(patches, axis=-1) @ kernel.reshape(kh * kw * ci, co) + bias


def _phase_taps(kernel: int, stride: int, pad_low: int, phase: int) -> list[tuple[int, int]]:
    """(kernel tap, input offset) pairs feeding output positions ``stride * i + phase``."""
    return [(t, (phase + t - pad_low) // stride) for t in range(kernel)
            if (phase + t - pad_low) % stride == 0]


def conv_transpose2d(x: jax.Array, kernel: jax.Array, bias: jax.Array, stride: int,
                     fold_width: bool = False) -> jax.Array:
    """SAME transposed conv as flax's ``nn.ConvTranspose`` (no kernel flip), NHWC:
    x [B, H, W, Ci], kernel [kh, kw, Ci, Co] -> [B, H*s, W*s, Co].

    Each of the stride^2 output phases is a small conv over x with the kernel taps that
    land on it, so no work is spent on the zeros that input dilation would insert
    (``fold_width``: see ``tap_conv``).
    """
    chex.assert_rank([x, kernel], 4)
    kh, kw, ci, co = kernel.shape
    b, h, w, _ = x.shape
    ph, pw = conv_transpose_pads(kh, stride)[0], conv_transpose_pads(kw, stride)[0]
    rows = []
    for a in range(stride):
        cols = []
        for c in range(stride):
            cols.append(tap_conv(x, kernel, _phase_taps(kh, stride, ph, a),
                                 _phase_taps(kw, stride, pw, c), fold_width))
        rows.append(jnp.stack(cols, axis=3))  # [B, H, W, s(cols), Co]
    out = jnp.stack(rows, axis=2)  # [B, H, s(rows), W, s(cols), Co]
    return out.reshape(b, h * stride, w * stride, co) + bias


class _PatchLayer(nn.Module):
    """Kernel [kh, kw, Ci, Co] and bias [Co] as flax creates them, applied by ``op``."""

    features: int
    kernel_size: tuple[int, int] = (3, 3)
    strides: tuple[int, int] = (1, 1)
    fold_width: bool = False  # see tap_conv
    op = None  # conv2d or conv_transpose2d (a class attribute, not a field)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.param("kernel", lecun_normal,
                            (*self.kernel_size, x.shape[-1], self.features))
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,))
        return type(self).op(x, kernel, bias, self.strides[0], self.fold_width)


class PatchConv(_PatchLayer):
    """Drop-in for ``nn.Conv(features, (k, k), strides=(s, s), padding="SAME")``."""

    op = staticmethod(conv2d)


class PatchConvTranspose(_PatchLayer):
    """Drop-in for ``nn.ConvTranspose(features, (k, k), strides=(s, s), padding="SAME")``."""

    op = staticmethod(conv_transpose2d)
