"""What sets the ±1σ coverage per structure: the estimate's bias, the error's shape, an image's gain.

Issue 18.

Table 1: for each ``--methods`` long run (``quality.py --long``; this script trains nothing)
and seed, the point estimate's mean error (estimate − target, normalised units) on held-out
simulated images of one structure each (``_protocol.test_set``) and of the training
distribution's mixed images (``_protocol.mixed_set``), ``--per-cell`` images per structure
and signal level (1 and 9). A regression network and μ(x) are both trained by MSE, so on the
distribution they were trained on their mean error is zero up to noise; a structure whose
mean error is not zero is one the network cannot tell apart from the rest of its training
mixture. With it the RMS error, to compare the bias with. (Pixels selected by their target,
e.g. the background, always show a positive error under MSE: that is selection on the
outcome, not bias, so the table does not split them.) Per-image mean and mean-square errors
are cached in the run folder (``class-bias-N.npz``).

Table 2: the ±1σ coverage per structure of ``--calibrated``'s std (the variance head's σ(x),
the maps ``calibration_size.py`` cached: 32 whole validation and test images per structure
and level) under three calibrations fitted on validation images only:

- *pooled*: one scale map over every structure (issue 18's acceptance protocol);
- *per structure*: a scale map fitted on that structure's validation images alone, which is
  what ``microdiff calibrate`` fits for a user whose held-out pairs show one structure;
- *per structure, bias removed*: the same after subtracting the structure's mean validation
  error from its test errors (needs the structure's label at prediction: a diagnostic, not a
  method);
- *per structure on the test images* (an oracle): the scale map fitted on the very test
  images it is scored on, the best any one-factor map can do per structure.

and the kurtosis of error / std per structure under the per-structure map (3 for a Gaussian
with a perfect std): above 3 a std matched to the RMS error holds more than 68 % of pixels.

Table 3: how much of each structure's error is one gain and offset per image. On each test
image the target is fitted by least squares as ``g · estimate + c`` (an oracle: it uses the
target); the spread of the gain ``g`` over images, the share of the MSE that this per-image
affine fit removes, and the spread over images of RMS(error) / RMS(calibrated std) (1 when an
image's std has the right scale). The targets are normalised per image by their own 1st and
99.8th percentiles (as CARE does), so an image's intensity scale rests on its brightest 0.2 %
of pixels, which the input does not fix.

Writes the ``class_bias`` section of docs/benchmarks.md. Usage::

    .venv/bin/python benchmarks/class_bias.py [--methods regression-any zmd-scaled-var-any zmd-scaled-var]
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
import calibration_size as CS  # noqa: E402
from _report import machine, pm, today, write_section  # noqa: E402

KINDS = (*CS.STRUCTURES, "mixed")


def point_estimate(model, cfg, x: torch.Tensor) -> torch.Tensor:
    """The method's point estimate for ``x`` ``[1, C, h, w]``: one pass (regression, or μ(x))."""
    if not hasattr(model, "schedule"):
        return model(x)
    return model.sample(x, steps=1, samples=0, **(cfg.sample.options() | {"uncertainty": "head"})).mean


def mean_errors(method: str, seed: int, per_cell: int) -> dict[str, np.ndarray]:
    """Structure → per-image [mean error, mean squared error] ``[N, 2]``; cached."""
    out = P.run_dir("long", method, seed)
    cache = out / f"class-bias-{per_cell}.npz"
    if cache.exists():
        z = np.load(cache)
        return {k: z[k] for k in z.files}
    cfg = P.method_config(method, P.LONG_STEPS, seed)
    model = P.model_at(out, cfg, P.LONG_STEPS)
    if hasattr(model, "schedule") and cfg.sample.point_estimate != "mean-net":
        raise SystemExit(f"{method}: its point estimate is not one pass (μ(x) or regression)")
    rows: dict[str, list[list[float]]] = {k: [] for k in KINDS}
    for im in [*P.test_set(per_cell, real=False), *P.mixed_set(per_cell)]:
        kind = "mixed" if im.structure not in CS.STRUCTURES else im.structure
        with torch.no_grad():
            err = (point_estimate(model, cfg, im.pair.x[None]) - im.pair.y[None])[0, 0]
        rows[kind].append([float(err.mean()), float(err.square().mean())])
    res = {k: np.array(v) for k, v in rows.items()}
    tmp = cache.with_suffix(".tmp.npz")
    np.savez(tmp, **res)
    tmp.replace(cache)
    return res


def coverages(method: str, seed: int) -> dict[str, dict[str, float]]:
    """Structure → ±1σ coverage on the test images under the three calibrations of Table 2."""
    val = CS.predicted(method, seed, "val", "whole", 32, "head", 0)
    test = CS.predicted(method, seed, "test", "whole", 32, "head", 0)
    vnames, tnames = np.array(val[0]), np.array(test[0])
    pooled = CS.fitted(val, np.arange(len(vnames)), "scale")
    out: dict[str, dict[str, float]] = {}
    for kind in CS.STRUCTURES:
        vi, ti = np.flatnonzero(vnames == kind), np.flatnonzero(tnames == kind)
        s, e = test[1][ti].astype(np.float64), test[2][ti].astype(np.float64)
        own = CS.fitted(val, vi, "scale")
        offset = float(val[2][vi].mean())
        debiased = (val[0], val[1], val[2] - offset)
        own_db = CS.fitted(debiased, vi, "scale")
        oracle = CS.fitted(test, ti, "scale")
        z = e / own.apply(s)
        out[kind] = {"pooled": float(np.mean(np.abs(e) < pooled.apply(s))),
                     "own": float(np.mean(np.abs(z) < 1)),
                     "own_db": float(np.mean(np.abs(e - offset) < own_db.apply(s))),
                     "oracle": float(np.mean(np.abs(e) < oracle.apply(s))),
                     "kurtosis": float(np.mean(z ** 4) / np.mean(z ** 2) ** 2), "offset": offset}
    s_all, e_all = test[1].astype(np.float64), test[2].astype(np.float64)
    out["pooled"] = {"pooled": float(np.mean(np.abs(e_all) < pooled.apply(s_all)))}
    return out


def gains(method: str, seed: int) -> dict[str, dict[str, float]]:
    """Structure → Table 3's statistics on the 32-per-cell test images (cached maps)."""
    val = CS.predicted(method, seed, "val", "whole", 32, "head", 0)
    names, std, err = CS.predicted(method, seed, "test", "whole", 32, "head", 0)
    cal = CS.fitted(val, np.arange(len(val[0])), "scale")
    targets = [im.pair.y[0].numpy().astype(np.float64) for im in P.test_set(32, real=False)]
    out = {}
    for kind in CS.STRUCTURES:
        g, removed, ratio = [], [], []
        for i in np.flatnonzero(np.array(names) == kind):
            e, y = err[i].astype(np.float64).ravel(), targets[i].ravel()
            a = np.stack([y + e, np.ones_like(y)], 1)
            coef, *_ = np.linalg.lstsq(a, y, rcond=None)
            g.append(coef[0])
            removed.append(1 - np.mean((y - a @ coef) ** 2) / np.mean(e ** 2))
            ratio.append(np.sqrt(np.mean(e ** 2) / np.mean(cal.apply(std[i].astype(np.float64)) ** 2)))
        q = np.quantile
        out[kind] = {"g10": q(g, 0.1), "g50": q(g, 0.5), "g90": q(g, 0.9), "removed": float(np.mean(removed)),
                     "r10": q(ratio, 0.1), "r90": q(ratio, 0.9)}
    return out


def gain_table(gain: dict[str, dict[int, dict]]) -> list[str]:
    """Table 3: method → seed → :func:`gains`."""
    lines = ["| method | structure | gain, median | gain, 10–90 % of images | MSE removed by a per-image "
             "gain and offset | RMS(error) / RMS(std) per image, 10–90 % |", "|---|---|---|---|---|---|"]
    for method, res in gain.items():
        for k in CS.STRUCTURES:
            c = {key: pm([res[s][k][key] for s in res], 2) for key in res[next(iter(res))][k]}
            lines.append(f"| {method} | {k} | {c['g50']} | {c['g10']} – {c['g90']} | "
                         f"{c['removed']} | {c['r10']} – {c['r90']} |")
    return lines


def bias_table(bias: dict[str, dict[int, dict[str, np.ndarray]]]) -> list[str]:
    lines = ["| method | " + " | ".join(KINDS) + " |", "|---|" + "---|" * len(KINDS)]
    for method, seeds in bias.items():
        cells = [pm([seeds[s][k][:, 0].mean() for s in seeds], 4, sign=True) for k in KINDS]
        lines.append(f"| {method}: mean error | " + " | ".join(cells) + " |")
        cells = [pm([np.sqrt(seeds[s][k][:, 1].mean()) for s in seeds], 4) for k in KINDS]
        lines.append(f"| {method}: RMS error | " + " | ".join(cells) + " |")
    return lines


def coverage_table(cov: dict[str, dict[int, dict]]) -> list[str]:
    """Table 2: method → seed → :func:`coverages`."""
    lines = ["| method | calibration | " + " | ".join(CS.STRUCTURES) + " | largest distance from pooled |",
             "|---|---|" + "---|" * (len(CS.STRUCTURES) + 1)]
    notes = []
    for method, res in cov.items():
        seeds = list(res)
        for key, name in (("pooled", "pooled map (the acceptance protocol)"),
                          ("own", "per-structure map"), ("own_db", "per-structure map, bias removed"),
                          ("oracle", "per-structure map fitted on the test images (oracle)")):
            cells = [pm([res[s][k][key] for s in seeds], 2) for k in CS.STRUCTURES]
            dist = [max(abs(res[s][k][key] - res[s]["pooled"]["pooled"]) for k in CS.STRUCTURES)
                    for s in seeds]
            lines.append(f"| {method} | {name} | " + " | ".join(cells) + f" | {pm(dist, 2)} |")
        kurt = [pm([res[s][k]["kurtosis"] for s in seeds], 1) for k in CS.STRUCTURES]
        lines.append(f"| {method} | kurtosis of error / std, per-structure map | {' | '.join(kurt)} | |")
        offsets = ", ".join(f"{k} {pm([res[s][k]['offset'] for s in seeds], 4, sign=True)}"
                            for k in CS.STRUCTURES)
        notes.append(f"{method}: pooled ±1σ with the pooled map "
                     f"{pm([res[s]['pooled']['pooled'] for s in seeds], 2)}; the structures' mean "
                     f"validation errors subtracted in the *bias removed* row: {offsets}.")
    return [*lines, "", *notes]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", nargs="+",
                    default=["regression-any", "zmd-scaled-var-any", "zmd-scaled-var"])
    ap.add_argument("--calibrated", nargs="+", default=["zmd-scaled-var-any"],
                    help="methods with a variance head for Tables 2 and 3")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--per-cell", type=int, default=16)
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    bias = {m: {s: mean_errors(m, s, args.per_cell) for s in args.seeds} for m in args.methods}
    cov = {m: {s: coverages(m, s) for s in args.seeds} for m in args.calibrated}
    gain = {m: {s: gains(m, s) for s in args.seeds} for m in args.calibrated}
    cmd = (f"`.venv/bin/python benchmarks/class_bias.py --methods {' '.join(args.methods)} --calibrated "
           f"{' '.join(args.calibrated)} --seeds {' '.join(map(str, args.seeds))} "
           f"--per-cell {args.per_cell}`")
    lines = ["## What sets the ±1σ coverage per structure: bias, error shape, a gain per image "
             "(issue 18)", "",
             f"Command: {cmd} ({time.perf_counter() - t0:.0f} s; {today()}; {machine()}).", "",
             f"Mean error (estimate − target, normalised units) of each method's one-pass point estimate "
             f"on {args.per_cell} held-out images per structure and signal level (1 and 9), and its RMS "
             "error; *mixed*: 2–3 structures per image, the half of "
             "the `any` training images that are not single-structure. Mean ± std over seeds. "
             "`-any` methods trained on `data.structure: any`, `zmd-scaled-var` on mixed images only.", "",
             *bias_table(bias), "",
             "±1σ coverage per structure of the variance head's σ(x) on 32 whole test "
             "images per structure and level, with scale maps fitted on 32 validation images per "
             "structure and level (wanted: within ±0.08 of the pooled coverage).", "",
             *coverage_table(cov), "",
             "How much of the error is one gain and offset per image (the same test "
             "images; the target fitted as gain · μ(x) + offset per image by least squares, an oracle; "
             "the std calibrated with the pooled map).", "",
             *gain_table(gain), ""]
    body = "\n".join(lines) + "\n"
    default = args.calibrated == ["zmd-scaled-var-any"]
    write_section("class_bias" if default else f"class_bias-{'+'.join(args.calibrated)}", body)
    print(body)


if __name__ == "__main__":
    main()
