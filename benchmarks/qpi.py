"""QPI, first part: the classical TIE baseline on held-out phase maps (issue 6).

The two-shot acquisition (λ = 0.521 µm, ±1 µm, 0.21 µm pixels) of held-out phase maps:
``--n`` natural-image maps from a stream that ``microdiff simulate`` seeds never reach,
and scikit-image's real quantitative phase image ``cell`` (centre 256² crop), both with a
3.5 rad range, at noise levels ℓ (noise N(ℓ, ℓ²) on intensities of mean 1). TIE gets the raw
intensities; its Tikhonov weight α is chosen per noise level on separate natural maps (the
best of a grid), so the baseline is tuned, not strawmanned. Metrics after removing the
mean (TIE cannot know it): RMSE in rad, PSNR over the 3.5 rad range, SSIM. Writes the
``qpi_tie`` section of docs/benchmarks.md and docs/img/qpi_tie.png. Usage::

    .venv/bin/python benchmarks/qpi.py      # about a minute on a 2-core CPU
"""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import machine, today, write_section  # noqa: E402

from microdiff.data import phase  # noqa: E402
from microdiff.data.phase_truth import cell_phase, phase_map  # noqa: E402
from microdiff.metrics import phase_metrics  # noqa: E402

PHASE_RANGE = 3.5
TEST_SEED, TUNE_SEED = 1000, 2000  # streams apart from every `microdiff simulate --seed` below 1000
ALPHAS = [10.0 ** e for e in range(-6, 1)]
ROOT = Path(__file__).resolve().parent.parent


def acquire(phi: np.ndarray, level: float, seed: int) -> torch.Tensor:
    """Raw two-shot intensities ``[2, H, W]`` with the paper's noise at level ℓ."""
    clean = phase.two_shot(torch.from_numpy(phi))
    return phase.add_noise(clean, level, generator=torch.Generator().manual_seed(seed))


def tie(stack: torch.Tensor, alpha: float) -> np.ndarray:
    cfg = phase.TwoShotConfig()
    return phase.tie_phase(stack[0], stack[1], cfg.defocus_um, cfg.pixel_um, cfg.wavelength_um,
                           regularization=alpha).numpy()


def scores(est: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """RMSE [rad], PSNR and SSIM over the phase range after removing the mean difference."""
    m = phase_metrics(est, truth, PHASE_RANGE)
    return {"rmse": m["rmse_rad"], "psnr": m["psnr"], "ssim": m["ssim"]}


@functools.cache
def tuned_alpha(level: float, size: int = 128, n: int = 8) -> float:
    """The Tikhonov weight of :data:`ALPHAS` with the lowest mean RMSE on ``n`` tuning maps
    (a stream apart from the test maps) at noise level ℓ."""
    tune = maps(n, size, TUNE_SEED)
    stacks = [acquire(p, level, TUNE_SEED + i) for i, p in enumerate(tune)]
    return min(ALPHAS, key=lambda a: np.mean([scores(tie(s, a), p)["rmse"]
                                             for s, p in zip(stacks, tune, strict=True)]))


def maps(n: int, size: int, seed: int) -> list[np.ndarray]:
    return [phase_map("natural", size, np.random.default_rng([seed, i]), PHASE_RANGE)[0] for i in range(n)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=16, help="held-out natural phase maps")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--levels", type=float, nargs="+", default=[0.0, 0.02, 0.1])
    args = ap.parse_args()
    test = maps(args.n, args.size, TEST_SEED)
    cell = cell_phase(PHASE_RANGE, size=256)
    rows, figure = [], None
    for level in args.levels:
        alpha = tuned_alpha(level, args.size)
        nat = [scores(tie(acquire(p, level, TEST_SEED + i), alpha), p) for i, p in enumerate(test)]
        cell_stack = acquire(cell, level, 7)
        cell_est = tie(cell_stack, alpha)
        rows.append((level, alpha, nat, scores(cell_est, cell)))
        if level == max(args.levels):
            figure = (cell_stack.numpy(), cell_est, cell, level)
    lines = [
        "## QPI: the TIE baseline (two-shot)", "",
        "Command: `.venv/bin/python benchmarks/qpi.py`  ", f"Machine: {machine()}  ", f"Date: {today()}", "",
        f"Two defocused intensities (λ = 0.521 µm, ±1 µm, 0.21 µm pixels) of {args.n} held-out "
        f"natural-image phase maps ({args.size}², range {PHASE_RANGE} rad) and of scikit-image's "
        "real quantitative phase image `cell` (centre 256²), noise N(ℓ, ℓ²) on intensities of mean "
        "1. TIE (FFT, Tikhonov α chosen per noise level on 8 other maps). Metrics after removing "
        f"the mean phase: RMSE [rad], PSNR over {PHASE_RANGE} rad, SSIM. The trained models "
        "on the same kind of data: the next section (benchmarks/qpi_models.py).", "",
        "| noise ℓ | α | RMSE natural [rad] | PSNR natural [dB] | SSIM natural | RMSE cell [rad] "
        "| PSNR cell [dB] | SSIM cell |", "|---|---|---|---|---|---|---|---|"]
    for level, alpha, nat, c in rows:
        m = {k: (np.mean([r[k] for r in nat]), np.std([r[k] for r in nat])) for k in ("rmse", "psnr", "ssim")}
        lines.append(f"| {level:g} | {alpha:g} | {m['rmse'][0]:.3f} ± {m['rmse'][1]:.3f} | "
                     f"{m['psnr'][0]:.2f} | {m['ssim'][0]:.3f} | {c['rmse']:.3f} | {c['psnr']:.2f} | "
                     f"{c['ssim']:.3f} |")
    lines += ["", "![cell: intensities at ±1 µm, TIE, truth](img/qpi_tie.png)"]
    _plot(ROOT / "docs" / "img" / "qpi_tie.png", *figure)
    write_section("qpi_tie", "\n".join(lines))
    print("\n".join(lines))


def draw_panels(fig, axes, panels: list[tuple[np.ndarray, str, str, tuple[float, float] | None]]) -> None:
    """One image per axis: (image, title, colour map, (vmin, vmax) or None), with colour bars."""
    for ax, (img, title, cmap, lim) in zip(axes, panels, strict=True):
        im = ax.imshow(img, cmap=cmap, vmin=lim[0] if lim else None, vmax=lim[1] if lim else None)
        ax.set_title(title, fontsize=9)
        ax.axis("off")
        fig.colorbar(im, ax=ax, fraction=0.046)


def _plot(path: Path, stack: np.ndarray, est: np.ndarray, truth: np.ndarray, level: float) -> None:
    import matplotlib.pyplot as plt

    from microdiff.plots import save_figure

    fig, axes = plt.subplots(1, 4, figsize=(12, 3.3), dpi=110)
    lo, hi = float(truth.min()), float(truth.max())
    panels = [(stack[0], "intensity at −1 µm", "gray", None), (stack[1], "intensity at +1 µm", "gray", None),
              (est - est.mean() + truth.mean(), "TIE [rad]", "viridis", (lo, hi)),
              (truth, "truth [rad]", "viridis", (lo, hi))]
    draw_panels(fig, axes, panels)
    fig.suptitle(f"scikit-image `cell` as phase truth, noise ℓ = {level:g}", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


if __name__ == "__main__":
    main()
