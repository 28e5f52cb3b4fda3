"""Why the calibrated ±1σ coverage differs between structures: the sign of the error (issue 18).

Reads the std and error maps that ``calibration_size.py`` cached for ``--method``'s long runs
(256 whole validation and 256 whole test images of 128², every structure at signal levels 1
and 9; this script predicts them itself if the caches are missing, and trains nothing).
The std is calibrated with the scale map fitted on all validation images (the default map),
and on the test images, per structure, the pixels are split at the median calibrated std of
all test pixels: the *dark* half (mostly background) and the *bright* half (mostly
structure). Per half: ±1σ coverage, the share of pixels where the estimate lies above the
truth (error = estimate − target > 0; 0.5 for a symmetric error), the median error in units
of the std, and (dark half only) the coverage once each image's mean error over its dark
pixels is subtracted (an oracle that removes a per-image background offset: it shows how
much of the miss is an offset rather than pixel noise). Writes the ``error_skew-METHOD``
section of docs/benchmarks.md. Usage::

    .venv/bin/python benchmarks/error_skew.py [--method zmd-scaled-var-any] [--seeds 0 1 2]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import calibration_size as CS  # noqa: E402
from _report import machine, per_seed_main, today  # noqa: E402

PER_CELL = 32


def halves(method: str, seed: int) -> dict[str, dict[str, float]]:
    """Per structure: the statistics of the module docstring for one seed's model."""
    val = CS.predicted(method, seed, "val", "whole", PER_CELL, "head", 0)
    names, std, err = CS.predicted(method, seed, "test", "whole", PER_CELL, "head", 0)
    cal = CS.fitted(val, np.arange(len(val[0])), "scale")
    s, e = cal.apply(std).astype(np.float64), err.astype(np.float64)
    cut = float(np.median(s))
    out = {}
    for kind in CS.STRUCTURES:
        pick = np.array(names) == kind
        si, ei = s[pick], e[pick]
        dark = si < cut
        offset = np.array([ei[i][dark[i]].mean() if dark[i].any() else 0.0 for i in range(len(si))])
        row = {"all": float(np.mean(np.abs(ei) < si)), "dark_share": float(dark.mean())}
        for half, m in (("dark", dark), ("bright", ~dark)):
            row |= {f"{half}_cov": float(np.mean(np.abs(ei[m]) < si[m])),
                    f"{half}_above": float(np.mean(ei[m] > 0)),
                    f"{half}_median": float(np.median(ei[m] / si[m]))}
        centred = np.abs(ei - offset[:, None, None]) < si
        row["dark_cov_no_offset"] = float(centred[dark].mean())
        out[kind] = row
    return out


def report(args, results: dict[int, dict], seconds: float) -> str:
    seeds = list(results)

    def cell(kind: str, key: str, digits: int = 2, sign: bool = False) -> str:
        v = np.array([results[s][kind][key] for s in seeds])
        fmt = f"{'+' if sign else ''}.{digits}f"
        return f"{v.mean():{fmt}} ± {v.std():.{digits}f}" if len(v) > 1 else f"{v.mean():{fmt}}"

    cmd = (f"`.venv/bin/python benchmarks/error_skew.py --method {args.method} "
           f"--seeds {' '.join(map(str, seeds))}`")
    lines = [f"## Where the ±1σ coverage differs by structure: the error's sign ({args.method}; "
             "issue 18)", "",
             f"Command: {cmd} ({seconds:.0f} s; {today()}; {machine()}).", "",
             f"The std maps of *How many images calibration needs* ({PER_CELL} whole test images per "
             "structure and level), calibrated with the scale map fitted on all validation images. Per "
             "structure, the pixels below the median calibrated std of all test pixels (*dark*: mostly "
             "background) and above it (*bright*: mostly structure): ±1σ coverage, the share with the "
             "estimate above the truth "
             "(0.5 for a symmetric error), the median error / std, and the dark half's coverage once each "
             "image's mean dark-pixel error is subtracted (an oracle). Mean ± std over seeds.", "",
             "| structure | ±1σ all | dark share | ±1σ dark | above truth, dark | median err/σ, dark "
             "| ±1σ dark, offset removed | ±1σ bright | above truth, bright | median err/σ, bright |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for kind in CS.STRUCTURES:
        lines.append(f"| {kind} | {cell(kind, 'all')} | {cell(kind, 'dark_share')} | "
                     f"{cell(kind, 'dark_cov')} | "
                     f"{cell(kind, 'dark_above')} | {cell(kind, 'dark_median', sign=True)} | "
                     f"{cell(kind, 'dark_cov_no_offset')} | {cell(kind, 'bright_cov')} | "
                     f"{cell(kind, 'bright_above')} | {cell(kind, 'bright_median', sign=True)} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    per_seed_main(__doc__, "error_skew", halves, report)


if __name__ == "__main__":
    main()
