"""Figures shared by the benchmark scripts (this directory is on ``sys.path`` when a script
runs, so ``from figures import image_rows``)."""

from __future__ import annotations

from pathlib import Path

import torch


def image_rows(rows: list[tuple[str, torch.Tensor]], path: Path, *, cols: int | None = None,
               title: str | None = None, label_size: float = 8, width: float = 0.85,
               height: float = 0.9, dpi: int = 110) -> None:
    """One labelled row per ``(label, images [n, C, H, W] in [-1, 1])``, first channel in grey;
    ``cols`` columns (default: the first row's length; shorter rows leave blank cells)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = cols or rows[0][1].shape[0]
    fig, axes = plt.subplots(len(rows), cols, squeeze=False,
                             figsize=(width * cols + 2.0, height * len(rows) + 0.4))
    for i, (label, imgs) in enumerate(rows):
        for j in range(cols):
            ax = axes[i, j]
            ax.set_xticks([]), ax.set_yticks([])
            if j < len(imgs):
                ax.imshow(imgs[j, 0].clamp(-1, 1).numpy(), cmap="gray", vmin=-1, vmax=1)
            else:
                ax.axis("off")
            if j == 0:
                ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=label_size)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
