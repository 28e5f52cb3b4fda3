"""Figures (matplotlib, headless): sample montages and learned-schedule curves.

Every function writes a PNG atomically and returns its path.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .data.io import atomic_write_bytes  # noqa: E402
from .data.normalize import PERCENTILES  # noqa: E402

MONTAGE_COLUMNS = ("input (bicubic)", "posterior mean", "posterior std", "|mean − target|", "target")


def montage_columns(point_estimate: str = "sample-mean", uncertainty: str = "samples") -> tuple[str, ...]:
    """:data:`MONTAGE_COLUMNS` named after what the model gives: μ(x) for the mean network
    (``sample.point_estimate: mean-net``), σ(x) for the variance head (``sample.uncertainty: head``)."""
    mean = "mean network μ(x)" if point_estimate == "mean-net" else MONTAGE_COLUMNS[1]
    std = "variance head σ(x)" if uncertainty == "head" else MONTAGE_COLUMNS[2]
    return (MONTAGE_COLUMNS[0], mean, std, *MONTAGE_COLUMNS[3:])


def save_figure(fig: plt.Figure, path: str | Path, dpi: int = 100) -> Path:
    """Write ``fig`` as a PNG atomically (parent folders created), close it, return the path."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(Path(path), buf.getvalue(), overwrite=True)
    return Path(path)


def montage(path: str | Path, rows: Sequence[Sequence[np.ndarray]],
            columns: Sequence[str] = MONTAGE_COLUMNS, row_labels: Sequence[str] | None = None) -> Path:
    """A grid of 2-D images, one row per example (each panel scaled to its own 1st–99.8th
    percentiles; std and error panels in a separate colour map)."""
    n, m = len(rows), len(columns)
    fig, axes = plt.subplots(n, m, figsize=(2.2 * m, 2.2 * n), squeeze=False)
    for i, row in enumerate(rows):
        for j, img in enumerate(row):
            ax = axes[i, j]
            lo, hi = np.percentile(img, PERCENTILES)
            spread = "std" in columns[j] or "|" in columns[j]
            ax.imshow(img, cmap="magma" if spread else "gray", vmin=lo, vmax=max(hi, lo + 1e-9))
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(columns[j], fontsize=9)
        if row_labels:
            axes[i, 0].set_ylabel(row_labels[i], fontsize=8)
    fig.tight_layout()
    return save_figure(fig, Path(path))


def schedule_curves(path: str | Path, t: np.ndarray, curves: dict[str, np.ndarray],
                    title: str = "learned schedule") -> Path:
    """γ(t) curves (one per label), e.g. averaged over structure and background pixels."""
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    for label, g in curves.items():
        ax.plot(t, g, label=label)
    ax.set_xlabel("t")
    ax.set_ylabel("γ(t)  (signal fraction)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return save_figure(fig, Path(path))


def calibration_plot(path: str | Path, bins: dict[str, tuple[np.ndarray, np.ndarray]],
                     title: str = "std against error") -> Path:
    """RMSE against RMV (root-mean predicted variance) per bin of the std, one curve per label
    (e.g. raw and calibrated), with the ideal line RMSE = RMV."""
    fig, ax = plt.subplots(figsize=(4.2, 3.8))
    top = 0.0
    for i, (label, (rmv, rmse)) in enumerate(bins.items()):
        ax.plot(rmv, rmse, "o-", ms=4, color=f"C{i}", label=label)
        top = max(top, float(np.max(rmv)), float(np.max(rmse)))
    ax.plot([0, top], [0, top], "k:", lw=1, label="ideal")
    return _finish_curves(fig, ax, "predicted std (RMV of the bin)", "RMSE of the bin", title, path)


def sparsification_plot(path: str | Path, fractions: np.ndarray, curves: dict[str, np.ndarray],
                        title: str = "sparsification") -> Path:
    """RMSE of the pixels left against the fraction removed (most uncertain first), one curve
    per ordering (e.g. by std, by a proxy, the oracle by |error|)."""
    fig, ax = plt.subplots(figsize=(4.5, 3.4))
    for label, rmse in curves.items():
        ax.plot(fractions, rmse, label=label, ls=":" if label == "oracle" else "-")
    return _finish_curves(fig, ax, "fraction of pixels removed", "RMSE of the rest", title, path)


def _finish_curves(fig: plt.Figure, ax: plt.Axes, xlabel: str, ylabel: str, title: str,
                   path: str | Path) -> Path:
    """Labels, title and legend of a curve plot, then :func:`save_figure`."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, Path(path))
