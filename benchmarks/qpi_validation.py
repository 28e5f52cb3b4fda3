"""QPI design choices on validation maps only: the data-consistency steps of issue 19.

A trained two-shot model (a ``qpi_models.py`` method and seed, trained there first) predicts
validation phase maps that no training or test run draws: natural-image maps (128², the
tuning stream of ``qpi.py``) and synthetic cells (256², ``cell_phantoms``, their own stream),
at noise ℓ = 0, 0.02, 0.05, 0.1, 0.2. Its point estimate is then moved towards the
intensities by one TIE-preconditioned Gauss-Newton step (``phase.tie_data_consistency``) with
weight α = gain · σ̂² (σ̂ the pair's estimated noise), for each ``--gains``; the table gives
RMSE [rad] of the network, TIE with the noise-adaptive α, and each gain.
``phase.DATA_CONSISTENCY_GAIN`` is the gain with the lowest mean over the table. Then the
Wiener step through the pair's transfer function (``phase_consistency``) alone and after the
TIE step at that gain, for each ring threshold ``--thresholds`` z
(``phase_consistency.WIENER_THRESHOLD``: the best z of the TIE + Wiener columns). ``--tiles T``
adds the network run in overlapping T² tiles (overlap T/4, blended as ``predict`` blends) and
that estimate after both steps, the preset's prediction (``sample.tile``; a section of its
own). Usage::

    .venv/bin/python benchmarks/qpi_validation.py --method cvdm-tieauto-mean-cells --seeds 0
    .venv/bin/python benchmarks/qpi_validation.py --seeds 0 1 2 --gains 100 --thresholds 4 --tiles 64 128
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import qpi as Q  # noqa: E402
import qpi_models as M  # noqa: E402
from _report import machine, today, write_section  # noqa: E402

from microdiff.data import phase  # noqa: E402
from microdiff.data.cell_phantoms import cell_phantom  # noqa: E402
from microdiff.data.datasets import make_pair  # noqa: E402
from microdiff.data.phase_consistency import (  # noqa: E402
    WIENER_THRESHOLD,
    data_consistency,
    wiener_data_consistency,
)
from microdiff.data.sources import task_of  # noqa: E402
from microdiff.metrics import phase_metrics  # noqa: E402
from microdiff.predictor import load  # noqa: E402

LEVELS = (0.0, 0.02, 0.05, 0.1, 0.2)
CELL_SEED = 3000  # synthetic validation cells: default_rng([CELL_SEED, i])


def validation_maps(n_natural: int, n_cells: int) -> list[tuple[str, np.ndarray]]:
    """(group, phase [rad]) of the validation set."""
    maps = [("natural", p) for p in Q.maps(n_natural, 128, Q.TUNE_SEED)]
    for i in range(n_cells):
        c = cell_phantom(256, np.random.default_rng([CELL_SEED, i]))
        maps.append(("cells", Q.PHASE_RANGE * (c - c.min()) / (c.max() - c.min())))
    return maps


def rows_of(method: str, seed: int, gains: list[float], maps, steps: int = 800,
            thresholds: tuple[float, ...] = (), tiles: tuple[int, ...] = ()) -> dict:
    """{(group, ℓ): {estimate name: [RMSE per map]}} for one trained run."""
    cfg = M.method_config("qpi-2shot", method, steps, seed)
    predictor = load(M.run_dir("qpi-2shot", method, steps, seed) / "model")
    task = task_of(cfg.data)
    out: dict = {}
    for level in LEVELS:
        for i, (group, phi) in enumerate(maps):
            raw = Q.acquire(phi, level, Q.TUNE_SEED + 500 + i).to(torch.float64)
            pair = make_pair("val", raw.numpy().astype(np.float32), phi[None].astype(np.float32), task)
            net = M.draw(predictor, pair.x, cfg.sample.steps, 1, seed, cfg.sample.options())["mean"][0, 0]
            net = net.double() * Q.PHASE_RANGE
            sigma2 = phase.two_shot_noise(raw[0], raw[1]) ** 2
            est = {"network": net.numpy(),
                   "TIE (auto α)": Q.tie(raw, phase.adaptive_tie_regularization(raw[0], raw[1]))}
            for g in gains:
                alpha = max(g * sigma2, phase.ADAPTIVE_TIE_FLOOR)
                step = phase.tie_data_consistency(net, raw[0], raw[1], regularization=alpha)
                est[f"gain {g:g}"] = step.numpy()
            tie_step = data_consistency(net, raw[0], raw[1], "tie")
            est[f"Wiener z {WIENER_THRESHOLD:g} alone"] = wiener_data_consistency(net, raw[0], raw[1]).numpy()
            for z in thresholds:
                est[f"tie+Wiener z {z:g}"] = wiener_data_consistency(tie_step, raw[0], raw[1],
                                                                     threshold=z).numpy()
            for t in tiles:
                tiled = M.draw(predictor, pair.x, cfg.sample.steps, 1, seed, cfg.sample.options(), t)
                net_t = tiled["mean"][0, 0].double() * Q.PHASE_RANGE
                est[f"network, {t}² tiles"] = net_t.numpy()
                est[f"tie+Wiener, {t}² tiles"] = wiener_data_consistency(
                    data_consistency(net_t, raw[0], raw[1], "tie"), raw[0], raw[1]).numpy()
            cell = out.setdefault((group, level), {})
            for name, e in est.items():
                cell.setdefault(name, []).append(phase_metrics(e, phi, Q.PHASE_RANGE)["rmse_rad"])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--method", default="cvdm-tieauto-mean-cells", choices=list(M.METHODS))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--gains", type=float, nargs="+", default=[1, 10, 30, 100, 300, 1000])
    ap.add_argument("--n", type=int, default=6, help="natural maps (and half as many synthetic cells)")
    ap.add_argument("--thresholds", type=float, nargs="+", default=[2, 4, 10],
                    help="ring thresholds z of the Wiener step after the TIE step (at the chosen gain)")
    ap.add_argument("--tiles", type=int, nargs="+", default=[],
                    help="also run the network in overlapping tiles of these sides (a section of its own)")
    args = ap.parse_args()
    maps = validation_maps(args.n, max(1, args.n // 2))
    runs = [rows_of(args.method, s, args.gains, maps, thresholds=tuple(args.thresholds),
                    tiles=tuple(args.tiles)) for s in args.seeds]
    names = list(runs[0][("natural", LEVELS[0])])
    keys = sorted(runs[0], key=lambda k: (k[0] != "natural", k[1]))
    per_name = {n: np.mean([np.mean(r[k][n]) for r in runs for k in keys]) for n in names}
    best = min((n for n in names if n.startswith("gain")), key=per_name.get)
    best_z = min((n for n in names if n.startswith("tie+Wiener")), key=per_name.get)
    lines = ["## QPI validation: the data-consistency weights", "",
             f"Command: `.venv/bin/python benchmarks/qpi_validation.py --method {args.method} --seeds "
             f"{' '.join(map(str, args.seeds))} --gains {' '.join(f'{g:g}' for g in args.gains)}"
             f" --thresholds {' '.join(f'{z:g}' for z in args.thresholds)}"
             f"{f' --n {args.n}' if args.n != 6 else ''}"
             f"{' --tiles ' + ' '.join(map(str, args.tiles)) if args.tiles else ''}`  ",
             f"Machine: {machine()}  ",
             f"Date: {today()}", "", f"Validation maps only ({args.n} natural 128², {max(1, args.n // 2)} "
             "synthetic cells 256²; no test image). RMSE [rad], mean over maps and seeds "
             f"{', '.join(map(str, args.seeds))}, of "
             f"`{args.method}`'s point estimate, TIE with the noise-adaptive α, and the estimate after one "
             "TIE-preconditioned step with α = gain · σ̂², then the Wiener step (alone, and after the "
             f"TIE step at gain {phase.DATA_CONSISTENCY_GAIN:g}) at ring thresholds z. Lowest mean of "
             f"the gains: **{best}** ({per_name[best]:.3f}; network {per_name['network']:.3f}); of "
             f"TIE + Wiener: **{best_z}** ({per_name[best_z]:.3f})."
             + (" *T² tiles*: the network in overlapping T² tiles (overlap T/4), whole-image TIE + "
                f"Wiener (gain {phase.DATA_CONSISTENCY_GAIN:g}, z {WIENER_THRESHOLD:g}) after it."
                if args.tiles else ""),
             "",
             "| maps | ℓ | " + " | ".join(names) + " |", "|---" * (len(names) + 2) + "|"]
    for group, level in keys:
        vals = [np.mean([np.mean(r[(group, level)][n]) for r in runs]) for n in names]
        lines.append(f"| {group} | {level:g} | " + " | ".join(f"{v:.3f}" for v in vals) + " |")
    lines.append("| mean | | " + " | ".join(f"{per_name[n]:.3f}" for n in names) + " |")
    tag = "_tiles" + "_".join(map(str, args.tiles)) if args.tiles else ""
    write_section(f"qpi_validation_{args.method.replace('-', '_')}{tag}", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
