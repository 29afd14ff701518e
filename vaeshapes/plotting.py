"""Matplotlib figures. All plotting lives here; callers pass NumPy arrays and a path."""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

# Background black + 9 colours (the ARC palette, which the source's blocks resemble).
RECT_PALETTE = np.array([
    [0, 0, 0], [0, 116, 217], [255, 65, 54], [46, 204, 64], [255, 220, 0],
    [170, 170, 170], [240, 18, 190], [255, 133, 27], [127, 219, 255], [135, 12, 37],
], dtype=np.float32) / 255.0


def to_rgb(images: np.ndarray) -> np.ndarray:
    """Class images [..., H, W] (int) -> RGB via the palette; binary/probability images
    [..., H, W, 1] (float in [0, 1]) -> grey RGB. Output [..., H, W, 3] in [0, 1]."""
    images = np.asarray(images)
    if np.issubdtype(images.dtype, np.integer):
        return RECT_PALETTE[images]
    return np.repeat(np.clip(images, 0.0, 1.0), 3, axis=-1)


def _save(fig, path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def mosaic(rows: np.ndarray, gap: int = 1) -> np.ndarray:
    """RGB images [R, C, H, W, 3] tiled into one image with ``gap`` white pixels between."""
    r, c, h, w, _ = rows.shape
    out = np.ones((r * (h + gap) - gap, c * (w + gap) - gap, 3), rows.dtype)
    for i in range(r):
        for j in range(c):
            out[i * (h + gap):i * (h + gap) + h, j * (w + gap):j * (w + gap) + w] = rows[i, j]
    return out


def image_grid(rows: np.ndarray, path: Path, title: str = "",
               row_labels: Sequence[str] | None = None,
               col_labels: Sequence[str] | None = None) -> None:
    """Draws images [R, C, H, W(, 1)] as an R x C grid (one tiled image: fast to save)."""
    rows = to_rgb(rows)
    r, c, h, w = rows.shape[:4]
    fig, ax = plt.subplots(figsize=(0.9 * c + 0.6, 0.9 * r + 0.4))
    ax.imshow(mosaic(rows), interpolation="nearest")
    ax.set_xticks((np.arange(c) * (w + 1) + (w - 1) / 2) if col_labels is not None else [],
                  col_labels if col_labels is not None else [], fontsize=7)
    ax.set_yticks((np.arange(r) * (h + 1) + (h - 1) / 2) if row_labels is not None else [],
                  row_labels if row_labels is not None else [], fontsize=7)
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    if title:
        ax.set_title(title, fontsize=10)
    _save(fig, path)


def rollback_epochs(records: list[dict]) -> list[int]:
    """Epochs of the metrics.jsonl records by which some replica's rollback count rose."""
    if "train/rollbacks" not in records[0]:
        return []
    counts = np.array([r["train/rollbacks"] for r in records])  # the mean over replicas
    rose = np.diff(counts, prepend=0.0) > 0
    return [r["epoch"] for r, up in zip(records, rose, strict=True) if up]


def training_curves(metrics_path: Path, path: Path) -> None:
    """Per-pixel train (and val) loss, recon and KL against epoch, from metrics.jsonl:
    the mean over seeds with a +-1 std band and each seed as a thin line; in a beta
    sweep, one line per beta and split (``beta_<b>/`` records); a dotted grey line at each
    logged epoch by which a replica rolled back (``train/rollbacks`` rose)."""
    records = [json.loads(line) for line in Path(metrics_path).read_text().splitlines()
               if line.strip()]
    if not records:
        return
    epochs = [r["epoch"] for r in records]
    groups = sorted({k.split("/")[0] for k in records[0] if k.startswith("beta_")},
                    key=lambda g: float(g[len("beta_"):])) or [""]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    for ax, term in zip(axes, ("loss", "recon", "kl"), strict=True):
        positive = False  # a log axis needs a value > 0 (a diverged run logs only NaN)
        for group, split in itertools.product(groups, ("train", "val")):
            prefix = f"{group}/" if group else ""
            key = f"{prefix}{split}/{term}_per_pixel"
            if key in records[0]:
                mean = np.array([r[key] for r in records])
                positive |= bool(np.any(mean > 0))
                (line,) = ax.plot(epochs, mean,
                                  label=f"{group.replace('_', ' = ')} {split}".strip())
                if f"{key}/std" in records[0]:
                    std = np.array([r[f"{key}/std"] for r in records])
                    ax.fill_between(epochs, mean - std, mean + std, alpha=0.3)
                if not group and key in records[0].get("per_seed", {}):
                    seeds = np.array([r["per_seed"][key] for r in records])  # [epochs, seeds]
                    ax.plot(epochs, seeds, color=line.get_color(), lw=0.5, alpha=0.5)
        for epoch in rollback_epochs(records):
            ax.axvline(epoch, color="grey", ls=":", lw=0.8)
        ax.set_title(f"{term} (nats per pixel)")
        ax.set_xlabel("epoch")
        ax.set_yscale("log" if positive else "linear")
        ax.legend(fontsize=7)
    _save(fig, path)


def latent_scatter(points: np.ndarray, labels: np.ndarray, label_names: Sequence[str],
                   dims: tuple[int, int], path: Path,
                   colours: np.ndarray | None = None) -> None:
    """Scatter of 2-D latents [N, 2] coloured by an integer label [N] (``colours[label]``
    if given, else matplotlib's tab10)."""
    fig, ax = plt.subplots(figsize=(5, 4.5))
    if colours is None:
        colours = [plt.get_cmap("tab10")(i % 10) for i in range(len(label_names))]
    for i, name in enumerate(label_names):
        sel = labels == i
        if sel.any():
            ax.scatter(points[sel, 0], points[sel, 1], s=4, alpha=0.6, color=colours[i],
                       label=name)
    ax.set_xlabel(f"mu[{dims[0]}]")
    ax.set_ylabel(f"mu[{dims[1]}]")
    ax.set_title("test posterior means")
    ax.legend(markerscale=3, fontsize=7)
    _save(fig, path)


def bits_per_dim(bars: dict[str, np.ndarray], path: Path, title: str) -> None:
    """Grouped bar chart: one group per latent dimension, one bar per named series."""
    names = list(bars)
    d = len(next(iter(bars.values())))
    width = 0.8 / len(names)
    fig, ax = plt.subplots(figsize=(1 + 0.8 * d, 3.5))
    for i, name in enumerate(names):
        ax.bar(np.arange(d) + (i - (len(names) - 1) / 2) * width, bars[name], width,
               label=name)
    ax.set_xticks(np.arange(d), [f"z{i}" for i in range(d)])
    ax.set_ylabel("bits")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    _save(fig, path)


def factor_heatmaps(matrices: dict[str, np.ndarray], factor_names: Sequence[str],
                    path: Path) -> None:
    """One annotated heatmap [F, D] (factors x latent dimensions, values in [0, 1]) per
    named matrix, side by side."""
    width = 1.5 + 0.6 * np.shape(next(iter(matrices.values())))[1]
    height = 1.2 + 0.5 * len(factor_names)
    fig, axes = plt.subplots(1, len(matrices), squeeze=False,
                             figsize=(len(matrices) * width, height))
    for ax, (title, matrix) in zip(axes[0], matrices.items(), strict=True):
        matrix = np.asarray(matrix)
        ax.imshow(matrix, vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
        for (i, j), v in np.ndenumerate(matrix):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=6,
                    color="black" if v > 0.6 else "white")
        ax.set_xticks(range(matrix.shape[1]), [f"z{j}" for j in range(matrix.shape[1])])
        ax.set_yticks(range(len(factor_names)), factor_names)
        ax.set_title(title, fontsize=9)
    _save(fig, path)


def factor_scatter(factors: np.ndarray, latents: np.ndarray, dims: Sequence[int],
                   factor_names: Sequence[str], path: Path) -> None:
    """Per factor, its value [N] (jittered) against the latent mean of its best
    dimension: the source's colour and top-row plots, for every factor."""
    n = len(factor_names)
    fig, axes = plt.subplots(1, n, figsize=(3 * n, 2.8), squeeze=False)
    jitter = np.random.default_rng(0).uniform(-0.15, 0.15, factors.shape[0])
    for f, ax in enumerate(axes[0]):
        ax.scatter(factors[:, f] + jitter, latents[:, dims[f]], s=3, alpha=0.4)
        ax.set_xlabel(factor_names[f])
        ax.set_ylabel(f"mu[{dims[f]}]")
    fig.suptitle("each factor against the posterior mean of its most associated dimension",
                 fontsize=10)
    fig.tight_layout()
    _save(fig, path)


def rate_distortion(summary: dict, path: Path, floor_nats: float | None, title: str) -> None:
    """Rate (bits) against distortion (nats per image), one point per beta with error bars
    over seeds and each seed's point: the KL, the Gaussian-channel estimates when present,
    and the line rate + distortion = H(X) below which no model can lie when the entropy is
    known."""
    d, d_std = np.asarray(summary["distortion_nats"]), np.asarray(summary["distortion_nats/std"])
    fig, ax = plt.subplots(figsize=(5.5, 4))
    series = {"KL (rate)": "rate_kl_bits",
              "Gaussian channel, source estimate Var(z)": "rate_channel_bits",
              "Gaussian channel, Var(mu) / (E[sigma^2] + sigma_n^2)": "rate_channel_bits_mu"}
    for i, (label, key) in enumerate((k, v) for k, v in series.items() if v in summary):
        line = ax.errorbar(d, summary[key], xerr=d_std, yerr=summary[f"{key}/std"],
                           marker="o", capsize=3, label=f"{label}: mean ± std")
        ax.scatter(summary["per_seed"]["distortion_nats"], summary["per_seed"][key], s=10,
                   alpha=0.4, color=line[0].get_color(),
                   label="each seed (faint)" if i == 0 else "_nolegend_")
    for beta, x, y in zip(summary["beta"], d, summary["rate_kl_bits"], strict=True):
        ax.annotate(f"beta={beta:g}", (x, y), textcoords="offset points", xytext=(4, 4),
                    fontsize=7)
    if floor_nats is not None:
        xs = np.linspace(0.0, max(floor_nats, float(d.max())), 50)
        ax.plot(xs, np.maximum(floor_nats - xs, 0.0) / np.log(2.0), "k--", lw=1,
                label="rate + distortion = H(X)")
    ax.set_xlabel("distortion: test -log p(x|z), nats per image")
    ax.set_ylabel("rate: bits per image")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    _save(fig, path)
