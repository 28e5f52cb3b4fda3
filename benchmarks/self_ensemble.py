"""The point estimate averaged over the eight flips and rotations of the input (self-ensemble).

Microscopy images have no preferred orientation and the PSF is symmetric, so a network's
prediction can be averaged over the dihedral group: predict on each of the 8 rotated/flipped
inputs, undo the transform, average. Super-resolution networks often gain a little from it, and
CAREamics predicts this way by default. This measures, on the cached 2000-step runs of
``quality.py --long`` (seeds 0, 1, 2; the EMA weights at step 2000), what it gives the default
design's μ(x) and the regression U-Net of the same size, on the same held-out images as the
*long sizing* table (16 simulated 128² images, the real BioSR pair's centre 128² crop at levels
01 and 09), and
whether it changes their ranking. No training; writes the ``self_ensemble`` section of
docs/benchmarks.md. Usage::

    .venv/bin/python benchmarks/self_ensemble.py --methods zmd-scaled-var-any regression-any
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _protocol as P  # noqa: E402
from _report import machine, today, write_section  # noqa: E402
from quality import SIZES  # noqa: E402

GROUPS = {"simulated (16 images)": ("sim-low", "sim-high"), "real-01": ("real-01",), "real-09": ("real-09",)}
SHOWN = ("psnr", "ssim", "frc_resolution")


def dihedral(t: torch.Tensor, k: int) -> torch.Tensor:
    """Transform ``k`` in 0..7 of the last two axes: ``k % 4`` quarter turns, a flip for k ≥ 4."""
    t = torch.flip(t, (-1,)) if k >= 4 else t
    return torch.rot90(t, k % 4, (-2, -1))


def undo_dihedral(t: torch.Tensor, k: int) -> torch.Tensor:
    """Inverse of :func:`dihedral`."""
    t = torch.rot90(t, -(k % 4), (-2, -1))
    return torch.flip(t, (-1,)) if k >= 4 else t


@torch.no_grad()
def point_estimate(model, x: torch.Tensor, transforms: int) -> torch.Tensor:
    """The model's one-pass estimate ``[1, C, H, W]`` (μ(x) for a mean-network model, the
    prediction for regression), averaged over the first ``transforms`` dihedral transforms."""
    out = []
    for k in range(transforms):
        xk = dihedral(x, k)
        if model.generative:
            mu = model.predict_mean(xk)
            pred = model.from_diffused(xk, torch.zeros_like(mu), mu)
        else:
            pred = model(xk)
        out.append(undo_dihedral(pred, k))
    return torch.stack(out).mean(0)


def measure(method: str, seed: int, images: list[P.TestImage]) -> dict[str, list[dict]]:
    cfg = P.method_config(method, P.LONG_STEPS, seed)
    model = P.model_at(P.run_dir(P.run_tag(P.LONG_STEPS), method, seed), cfg, P.LONG_STEPS)
    rows: dict[str, list[dict]] = {"plain": [], "8 transforms": []}
    for im in images:
        for name, n in (("plain", 1), ("8 transforms", 8)):
            t0 = time.perf_counter()
            pred = point_estimate(model, im.pair.x[None], n)[0, 0].numpy()
            rows[name].append(P._row(im, pred, time.perf_counter() - t0))
    return rows


def group_value(rows: list[dict], groups: tuple[str, ...], key: str) -> float:
    """Mean over the group's images (the median for FRC, as the *long sizing* table)."""
    v = [r[key] for r in rows if r["group"] in groups]
    return float(np.median(v) if key == "frc_resolution" else np.mean(v))


def table(res: dict, methods: list[str], seeds: list[int]) -> list[str]:
    """The markdown table: a row per method and estimate, PSNR / SSIM / FRC per group."""
    cols = [f"{k} {g}" for g in GROUPS for k in ("PSNR", "SSIM", "FRC [nm]")]
    lines = ["| method | estimate | " + " | ".join(cols) + " |", "|---|---|" + "---|" * len(cols)]
    digits = {"psnr": 2, "ssim": 3, "frc_resolution": 0}
    for m in methods:
        for est in ("plain", "8 transforms"):
            cells = [P.mean_pm_std([group_value(res[m, s][est], groups, key) for s in seeds], digits[key])
                     for groups in GROUPS.values() for key in SHOWN]
            lines.append(f"| {m} | {est} | " + " | ".join(cells) + " |")
    return lines


def gains(res: dict, methods: list[str], seeds: list[int]) -> str:
    """The PSNR gain of the 8 transforms over one pass, per method, group and seed."""
    def gain(m: str, s: int, groups: tuple[str, ...]) -> str:
        ens, plain = (group_value(res[m, s][e], groups, "psnr") for e in ("8 transforms", "plain"))
        return f"{ens - plain:+.2f}"

    return "; ".join(f"{m}: " + ", ".join(f"{g} " + " / ".join(gain(m, s, gs) for s in seeds)
                                         for g, gs in GROUPS.items()) for m in methods)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", nargs="+", default=["zmd-scaled-var-any", "regression-any"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = ap.parse_args()
    t_start = time.perf_counter()
    z = SIZES["long"]
    images = P.test_set(z["per_cell"], real_crop=z["real_crop"])  # the long sizing table's images
    res = {(m, s): measure(m, s, images) for m in args.methods for s in args.seeds}
    lines = [
        "## The point estimate over the eight flips and rotations (self-ensemble; long sizing)", "",
        f"Command: `.venv/bin/python benchmarks/self_ensemble.py --methods {' '.join(args.methods)} "
        f"--seeds {' '.join(map(str, args.seeds))}` ({time.perf_counter() - t_start:.0f} s; {today()}; "
        f"{machine()}).", "",
        "The 2000-step runs of `quality.py --long` (EMA weights at step 2000), on its held-out images; "
        "*plain*: one pass as `predict` gives it; *8 transforms*: the mean of the predictions on the 8 "
        "rotated/flipped inputs, each transformed back. PSNR and SSIM: mean over the group's images after "
        "CARE's affine matching; FRC: the median image's resolution (nm, lower is finer); mean ± std over "
        "seeds.", "", *table(res, args.methods, args.seeds), "",
        f"Gain of the 8 transforms over one pass, PSNR [dB], seeds {' / '.join(map(str, args.seeds))}: "
        + gains(res, args.methods, args.seeds) + "."]
    write_section("self_ensemble", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
