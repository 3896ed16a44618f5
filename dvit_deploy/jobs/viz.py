"""The DynamicViT picture: the input, then the patches each pruning stage kept, side by side.

Dropped patches are painted over in light grey as in the paper's figures. matplotlib is an
optional dependency (the ``viz`` extra) and is imported only here, without pyplot, so no global
backend state is touched.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ..helpers.errors import BadInput
from ..helpers.lazy import require
from ..helpers.fileio import atomic_path

MASK_COLOUR = np.array([0.92, 0.92, 0.92], np.float32)
MASK_OPACITY = 0.9  # a faint trace of the dropped content stays visible, like the paper's figures
PANEL_INCHES = 2.4


def keep_mask(kept_ids: np.ndarray, grid: int) -> np.ndarray:
    """(grid, grid) bool: True where the patch id (row-major, as patch embedding flattens) was kept."""
    ids = np.asarray(kept_ids, dtype=np.int64).reshape(-1)
    if ids.size and (ids.min() < 0 or ids.max() >= grid * grid):
        raise BadInput(f"kept patch ids fall outside the {grid}×{grid} patch grid")
    mask = np.zeros(grid * grid, bool)
    mask[ids] = True
    return mask.reshape(grid, grid)


def masked_image(image: np.ndarray, mask: np.ndarray, patch: int) -> np.ndarray:
    """``image`` (H, W, 3) in [0, 1] with dropped patches painted over."""
    pixels = np.kron(mask, np.ones((patch, patch), bool))
    h, w = pixels.shape
    out = image[:h, :w].copy()
    out[~pixels] = MASK_OPACITY * MASK_COLOUR + (1 - MASK_OPACITY) * out[~pixels]
    return out


def save_keep_figure(
    output: Path,
    images: np.ndarray,
    kept: Sequence[np.ndarray],
    *,
    grid: int,
    patch: int,
    row_titles: Sequence[str] | None = None,
    title: str | None = None,
    dpi: int = 110,
) -> Path:
    """Write a PNG: one row per image, columns input + one panel per stage; atomically.

    ``images``: (N, H, W, 3) floats in [0, 1] (the model's view of each input, de-normalised);
    ``kept``: per stage, (N, K_s) original patch ids.
    """
    require("matplotlib", "viz", "--viz (drawing the kept-token picture)")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    output = Path(output)
    if output.suffix.lower() != ".png":
        raise BadInput(f"--viz writes a PNG; give a file name ending in .png, got {output.name}")
    if not kept:
        raise BadInput("no kept-token information to draw")
    n, stages = len(images), len(kept)
    total = grid * grid
    # Each row carries a two-line title (file name, top-1 class) above its panels.
    fig = Figure(figsize=(PANEL_INCHES * (stages + 1), (PANEL_INCHES + 0.45) * n + (0.4 if title else 0.1)))
    FigureCanvasAgg(fig)
    axes = fig.subplots(n, stages + 1, squeeze=False)
    for i in range(n):
        panels = [(images[i], row_titles[i] if row_titles else "input")]
        for s in range(stages):
            ids = kept[s][i]
            panels.append((masked_image(images[i], keep_mask(ids, grid), patch),
                           f"stage {s + 1}: {len(np.unique(ids))}/{total} kept"))
        for ax, (picture, label) in zip(axes[i], panels):
            ax.imshow(picture, interpolation="nearest")
            ax.set_title(label, fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BadInput(f"cannot create {output.parent}: {exc.strerror}") from None
    with atomic_path(output) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    return output
