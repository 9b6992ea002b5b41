"""Drawing maps over images with matplotlib (the optional extra ``imagegen[viz]``): image panels
with labelled axes, outlined regions, hatched regions, and writing a figure like any output image.

Panels show one channel of ``(H, W)`` maps with pixel ``(row, col)`` centred at ``(col, row)``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import ImagegenError
from ..imageio import save_image, to_uint8

INSTALL = 'pip install "imagegen[viz]"'


def pyplot():
    """``matplotlib.pyplot`` on the file-only Agg backend; a one-line ``ImagegenError`` saying how to
    install it when matplotlib is missing."""
    try:
        import matplotlib
    except ImportError:
        raise ImagegenError(f"pictures need matplotlib, which is not installed: {INSTALL}") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def channel_name(c: int, channels: int) -> str:
    """A panel title's suffix naming channel ``c``: empty for grey images, `` (R)`` ... for RGB."""
    if channels == 1:
        return ""
    return f" ({'RGB'[c]})" if channels == 3 else f" (channel {c})"


def pixel_axes(ax, title: str) -> None:
    """Title ``ax`` and label its axes in pixels (rows down, columns across)."""
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("column")
    ax.set_ylabel("row")


def show_image(ax, image: torch.Tensor, levels: int, title: str, alpha: float = 1.0) -> None:
    """Draw ``image (C, H, W)`` (values in ``[0, levels)``; C = 1 grey, 3 RGB) on ``ax``."""
    pixels = to_uint8(image.cpu(), levels).permute(1, 2, 0).numpy()
    if pixels.shape[2] == 1:
        ax.imshow(pixels[:, :, 0], cmap="gray", vmin=0, vmax=255, interpolation="nearest", alpha=alpha)
    else:
        ax.imshow(pixels, interpolation="nearest", alpha=alpha)
    pixel_axes(ax, title)


def outline(ax, mask: torch.Tensor, color: str, label: str | None = None, width: float = 2.0) -> None:
    """Draw the border of the cells where ``mask (H, W)`` is True."""
    from matplotlib.collections import LineCollection

    m = np.pad(mask.cpu().numpy().astype(bool), 1)
    segments = []
    for i, j in zip(*np.nonzero(m[1:-1, 1:-1]), strict=True):
        y, x = i + 1, j + 1
        if not m[y - 1, x]:
            segments.append([(j - 0.5, i - 0.5), (j + 0.5, i - 0.5)])
        if not m[y + 1, x]:
            segments.append([(j - 0.5, i + 0.5), (j + 0.5, i + 0.5)])
        if not m[y, x - 1]:
            segments.append([(j - 0.5, i - 0.5), (j - 0.5, i + 0.5)])
        if not m[y, x + 1]:
            segments.append([(j + 0.5, i - 0.5), (j + 0.5, i + 0.5)])
    ax.add_collection(LineCollection(segments, colors=color, linewidths=width, label=label,
                                     capstyle="projecting"))


def mark(ax, pixel: tuple[int, int], label: str) -> None:
    """Mark the pixel ``(row, col)`` with a red square."""
    ax.plot([pixel[1]], [pixel[0]], marker="s", markersize=7, markerfacecolor="none", markeredgecolor="red",
            markeredgewidth=2, linestyle="none", label=label)


def hatch(ax, mask: torch.Tensor, label: str | None = None, color: str = "0.55") -> None:
    """Cover the cells where ``mask (H, W)`` is True with a hatched grey (one patch per run of a row,
    so the hatching is continuous)."""
    from matplotlib.patches import Rectangle

    m = mask.cpu().numpy().astype(bool)
    for i, row in enumerate(m):
        j = 0
        while j < len(row):
            if row[j]:
                start = j
                while j < len(row) and row[j]:
                    j += 1
                ax.add_patch(Rectangle((start - 0.5, i - 0.5), j - start, 1, facecolor="white",
                                       edgecolor=color, hatch="///", linewidth=0, label=label))
                label = None  # one legend entry
            j += 1


def legend(fig, ax) -> None:
    """The legend of ``ax``'s labelled marks, in one line below the panels of ``fig``."""
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=len(labels), fontsize=8, frameon=False)


def save_figure(fig, path: str | Path, dpi: int = 110) -> Path:
    """Render ``fig`` and write it like any output image (format by extension, whole or not at all);
    the figure is closed. Returns the path."""
    import matplotlib.pyplot as plt

    fig.set_dpi(dpi)
    fig.canvas.draw()
    rgb = np.asarray(fig.canvas.buffer_rgba())[:, :, :3]
    plt.close(fig)
    return save_image(torch.from_numpy(rgb.copy()).permute(2, 0, 1), path)
