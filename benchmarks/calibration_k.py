"""How many samples the std needs (issue 18, item 6): coverage and ranking against K.

One seed of the long ``--method`` run (``quality.py --long``; nothing is trained) draws
``--max-k`` samples (the preset's steps and sampler) of 8 validation images
(``_protocol.validation_set(1)``: the calibration set) and the 8 simulated test images of
``_protocol.test_set(1)``. The std of the first K samples, K = 2, 4, …, max-k, is
calibrated on the validation images (``microdiff.calibration.fit``) and scored on the test
images: raw and calibrated ±1σ coverage, Spearman(std, |error|) and AUSE (mean over
images). Samples are cached in the run folder. Writes the ``calibration_k`` section of
docs/benchmarks.md. Usage::

    .venv/bin/python benchmarks/calibration_k.py [--method zmd-scaled] [--seed 0] [--max-k 16]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _protocol as P  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from _report import machine, today, write_section  # noqa: E402

from microdiff import calibration as C  # noqa: E402
from microdiff import metrics  # noqa: E402


def samples(method: str, seed: int, images: list[P.TestImage], k: int, tag: str) -> dict[str, dict]:
    """name → {samples [k, H, W], mean (the point estimate), y}, normalised units, cached."""
    return P.long_run_outputs(method, seed, images, k, f"samples-{tag}", ("samples", "mean", "y"))[0]


def maps(preds: dict[str, dict], k: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(std of the first k samples, estimate − target) per image."""
    return [(d["samples"][:k].std(axis=0, ddof=1).astype(np.float64), (d["mean"] - d["y"]).astype(np.float64))
            for d in preds.values()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--method", default="zmd-scaled", choices=list(P.METHODS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-k", type=int, default=16)
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    cal_preds = samples(args.method, args.seed, P.validation_set(1), args.max_k, "val1")
    test_preds = samples(args.method, args.seed, P.test_set(1, real=False), args.max_k, "test1")
    cfg = P.method_config(args.method, P.LONG_STEPS, args.seed)
    ks = [k for k in (2, 4, 8, 16, 32, 64) if k <= args.max_k]
    lines = [f"## How many samples the std needs ({args.method}, seed {args.seed}, {P.LONG_STEPS} steps)", "",
             f"Command: `.venv/bin/python benchmarks/calibration_k.py --method {args.method} "
             f"--seed {args.seed} --max-k {args.max_k}` ({time.perf_counter() - t0:.0f} s; {today()}; "
             f"{machine()}).", "",
             f"The std of the first K of {args.max_k} samples ({cfg.sample.steps} steps each), calibrated "
             "on 8 validation images and scored on the 8 simulated test images of `test_set(1)` (errors: "
             "estimate − target, normalised units; Spearman and AUSE: mean over images). One seed, "
             "8 images: a trend, not a precise figure.", "",
             "| K | ±1σ raw | ±1σ calibrated | ±2σ calibrated | Spearman(std, \\|err\\|) | AUSE "
             "| fitted map |",
             "|---|---|---|---|---|---|---|"]
    for k in ks:
        cal = C.fit(maps(cal_preds, k), samples=k, steps=cfg.sample.steps, source="validation_set(1)")
        test = maps(test_preds, k)
        s_all = np.concatenate([s.ravel() for s, _ in test])
        e_all = np.concatenate([e.ravel() for _, e in test])
        s_cal = cal.std.apply(s_all)
        sp = np.mean([metrics.spearman_std_error(s, e) for s, e in test])
        au = np.mean([metrics.ause(s, e) for s, e in test])
        inside = [np.mean(np.abs(e_all) <= f * s) for f, s in ((1, s_all), (1, s_cal), (2, s_cal))]
        lines.append(f"| {k} | {inside[0]:.2f} | {inside[1]:.2f} | {inside[2]:.2f} | {sp:.2f} | {au:.4f} | "
                     f"{cal.std.slope:.2f}·std {cal.std.offset:+.4f} |")
    write_section("calibration_k", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
