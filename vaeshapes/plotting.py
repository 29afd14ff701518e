"""Matplotlib figures. All plotting lives here; callers pass NumPy arrays and a path."""

from __future__ import annotations

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


def image_grid(rows: np.ndarray, path: Path, title: str = "",
               row_labels: Sequence[str] | None = None,
               col_labels: Sequence[str] | None = None) -> None:
    """Draws images [R, C, H, W(, 1)] as an R x C grid."""
    rows = to_rgb(rows)
    r, c = rows.shape[:2]
    fig, axes = plt.subplots(r, c, figsize=(0.9 * c + 0.6, 0.9 * r + 0.4), squeeze=False)
    for i in range(r):
        for j in range(c):
            ax = axes[i, j]
            ax.imshow(rows[i, j], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if row_labels is not None and j == 0:
                ax.set_ylabel(row_labels[i], fontsize=7)
            if col_labels is not None and i == r - 1:
                ax.set_xlabel(col_labels[j], fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    _save(fig, path)


def training_curves(metrics_path: Path, path: Path) -> None:
    """Per-pixel train (and val) loss, recon and KL against epoch, from metrics.jsonl."""
    records = [json.loads(line) for line in Path(metrics_path).read_text().splitlines()
               if line.strip()]
    if not records:
        return
    epochs = [r["epoch"] for r in records]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    for ax, term in zip(axes, ("loss", "recon", "kl"), strict=True):
        for split in ("train", "val"):
            key = f"{split}/{term}_per_pixel"
            if key in records[0]:
                mean = np.array([r[key] for r in records])
                ax.plot(epochs, mean, label=split)
                if f"{key}/std" in records[0]:
                    std = np.array([r[f"{key}/std"] for r in records])
                    ax.fill_between(epochs, mean - std, mean + std, alpha=0.3)
        ax.set_title(f"{term} (nats per pixel)")
        ax.set_xlabel("epoch")
        ax.set_yscale("log")
        ax.legend()
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
