"""The phase std against proxies a sceptic would try, and its calibration (issues 18 and 19).

For each seed of a two-shot ``qpi_models.py`` run (trained and sampled there first: this
script reads the cached samples of every test item, ``RUN/samples``, and samples nothing
new), the preset's prediction (data consistency included) gives a point estimate and the
std of the refined samples, in rad. On the same pixels, the error |estimate − truth| (means
matched, as ``phase_metrics``) is ranked by

* ``std``: the posterior std of the samples;
* ``|phase|``: the local magnitude of the estimate (|Gaussian-smoothed estimate|, σ = 2 px:
  the phase analogue of the local intensity);
* ``|estimate − TIE|``: the distance from the network's own baseline input, the TIE
  channel (the analogue of |estimate − bicubic input| for super-resolution);

by Spearman with |error| (higher is better) and AUSE (lower is better), per item, then the
mean over the group's items and seeds. Calibration: the std map of
``microdiff.calibration`` fitted on half of a group's pixels (natural maps: the first half of
the maps; the ``cell``: its left half) and applied to the other half, ±1σ coverage raw and
calibrated. Writes the ``qpi_uncertainty`` section of docs/benchmarks.md. Usage::

    .venv/bin/python benchmarks/qpi_uncertainty.py [--method cvdm-tieauto-mean-cells-wdc]
        [--seeds 0 1 2] [--levels 0.02 0.1] [--cell-draws 4]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.ndimage import gaussian_filter

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _protocol as P  # noqa: E402
import qpi as Q  # noqa: E402
import qpi_models as M  # noqa: E402
from _report import machine, today, write_section  # noqa: E402

from microdiff import calibration as C  # noqa: E402
from microdiff import metrics  # noqa: E402
from microdiff.data.datasets import make_pair  # noqa: E402
from microdiff.data.sources import task_of  # noqa: E402

SCORES = ("std", "|phase|", "|estimate − TIE|")
LOW_PASS_PX = 8.0  # the error's share below this Gaussian blur (px): smooth, low-frequency error
STEPS = 800  # the default budget (--steps picks the runs of another qpi_models.py --steps)


def item_maps(method: str, seed: int, items, steps: int = STEPS) -> list[dict]:
    """Per test item: group, level, and the error, std and proxy maps (rad) of ``method``'s
    prediction, from the ``steps``-step run's cached samples."""
    cfg = M.method_config("qpi-2shot", method, steps, seed)
    out = M.run_dir("qpi-2shot", method, steps, seed)
    task = task_of(cfg.data)
    rows = []
    for group, level, phi, stack, raw, name in items:
        path = M.sample_path(out, name, cfg.sample.steps, M.SIZES["default"]["samples"])
        if not path.exists():
            raise SystemExit(f"{path} is missing: run qpi_models.py for {method} seed {seed} at these "
                             "levels first")
        drawn = torch.load(path)
        pair = make_pair("test", raw if task.input_norm == "mean" else stack, phi[None], task)
        point, std, _ = task.refine(pair.x[None], drawn["mean"], drawn["samples"])
        std = drawn["std"] if std is None else std
        est = point[0, 0].numpy().astype(np.float64) * Q.PHASE_RANGE
        est = est - est.mean() + phi.mean()
        tie = pair.x[-1].numpy().astype(np.float64) * Q.PHASE_RANGE  # the baseline channel
        rows.append({"group": group, "level": level, "error": est - phi,
                     "std": std[0, 0].numpy().astype(np.float64) * Q.PHASE_RANGE,
                     "|phase|": np.abs(gaussian_filter(est, 2.0)),
                     "|estimate − TIE|": np.abs(est - (tie - tie.mean() + phi.mean()))})
    return rows


def halves(rows: list[dict]) -> tuple[list, list]:
    """(calibration, test) (std, error) pieces of one group's items: the first and second
    half of the natural maps, or the left and right half of the one ``cell`` (all its draws)."""
    if rows[0]["group"] == "cell":
        w = rows[0]["error"].shape[1] // 2
        return ([(r["std"][:, :w], r["error"][:, :w]) for r in rows],
                [(r["std"][:, w:], r["error"][:, w:]) for r in rows])
    h = len(rows) // 2
    return ([(r["std"], r["error"]) for r in rows[:h]], [(r["std"], r["error"]) for r in rows[h:]])


def analyse(rows: list[dict]) -> dict:
    """Per (group, level): Spearman and AUSE of each score (mean over items), ±1σ coverage
    raw and with the std calibrated on the other half."""
    out = {}
    for key in sorted({(r["group"], r["level"]) for r in rows}):
        sel = [r for r in rows if (r["group"], r["level"]) == key]
        res = {s: (float(np.mean([metrics.spearman_std_error(r[s], r["error"]) for r in sel])),
                   float(np.mean([metrics.ause(r[s], r["error"]) for r in sel]))) for s in SCORES}
        cal_part, test_part = halves(sel)
        std_map = C.fit_std_calibration(np.concatenate([s.ravel() for s, _ in cal_part]),
                                        np.concatenate([e.ravel() for _, e in cal_part]))
        s_test = np.concatenate([s.ravel() for s, _ in test_part])
        e_test = np.concatenate([e.ravel() for _, e in test_part])
        res["low"] = float(np.mean([np.mean(gaussian_filter(r["error"], LOW_PASS_PX) ** 2)
                                    / np.mean(r["error"] ** 2) for r in sel]))
        res["cov_raw"] = float(np.mean(np.abs(e_test) <= s_test))
        res["cov_cal"] = float(np.mean(np.abs(e_test) <= std_map.apply(s_test)))
        out[key] = res
    return out


def esc(text: str) -> str:
    """``text`` safe inside a markdown table cell."""
    return text.replace("|", "\\|")


def report(args, per_seed: dict[int, dict], seconds: float) -> list[str]:
    keys = sorted(next(iter(per_seed.values())))
    cmd = (f"benchmarks/qpi_uncertainty.py --method {args.method} --seeds {' '.join(map(str, args.seeds))} "
           f"--levels {' '.join(f'{lv:g}' for lv in args.levels)} --cell-draws {args.cell_draws}"
           + (f" --steps {args.steps}" if args.steps != STEPS else ""))
    lines = [f"## Phase uncertainty against proxies ({args.method}, {args.steps} steps)", "",
             f"Command: `.venv/bin/python {cmd}` ({seconds:.0f} s, cached samples; {today()}; "
             f"{machine()}).", "",
             "The std of the refined samples (K = 4) against two proxies, on the pixels of the "
             "`qpi_models.py` test items (6 natural maps, the `cell` over its noise draws; error = "
             "estimate − truth, means matched): Spearman with |error| (higher is better) and AUSE "
             "(lower is better), mean over items, mean ± std over seeds; ±1σ coverage of the raw std "
             "and of the std calibrated on the other half of the group (natural: half the maps; "
             "`cell`: the left half of the image); *low-freq. share*: the share of the squared error "
             f"that survives a Gaussian blur of σ = {LOW_PASS_PX:g} px (smooth error, which a per-pixel "
             "spread of samples that agree on the low frequencies cannot rank).", "",
             "| group | ℓ | " + " | ".join(f"Spearman {esc(s)}" for s in SCORES) + " | "
             + " | ".join(f"AUSE {esc(s)}" for s in SCORES) + " | ±1σ raw | ±1σ calibrated "
             "| low-freq. share |", "|---" * (5 + 2 * len(SCORES)) + "|"]
    for key in keys:
        vals = [per_seed[s][key] for s in per_seed]

        def ms(f, d: int = 2, vals=vals) -> str:
            return P.mean_pm_std([f(v) for v in vals], d)

        sp = [ms(lambda v, s=s: v[s][0]) for s in SCORES]
        au = [ms(lambda v, s=s: v[s][1], 3) for s in SCORES]
        lines.append(f"| {key[0]} | {key[1]:g} | " + " | ".join(sp) + " | " + " | ".join(au)
                     + f" | {ms(lambda v: v['cov_raw'])} | {ms(lambda v: v['cov_cal'])} "
                     f"| {ms(lambda v: v['low'])} |")
    wins = {s: sum(np.mean([per_seed[sd][k]['std'][0] for sd in per_seed])
                   > np.mean([per_seed[sd][k][s][0] for sd in per_seed]) for k in keys) for s in SCORES[1:]}
    lines += ["", "The std ranks errors better (Spearman) than " + " and ".join(
        f"{esc(s)} in {n} of {len(keys)} rows" for s, n in wins.items()) + "."]
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--method", default="cvdm-tieauto-mean-cells-wdc", choices=list(M.METHODS))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--levels", type=float, nargs="+", default=list(M.LEVELS))
    ap.add_argument("--cell-draws", type=int, default=4)
    ap.add_argument("--steps", type=int, default=STEPS, help="the training budget of the runs to read")
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    items = M.test_items("qpi-2shot", M.SIZES["default"]["n"], tuple(args.levels), args.cell_draws)
    per_seed = {}
    for seed in args.seeds:
        print(f"{args.method} seed {seed}", flush=True)
        per_seed[seed] = analyse(item_maps(args.method, seed, items, args.steps))
    lines = report(args, per_seed, time.perf_counter() - t0)
    suffix = "" if args.steps == STEPS else f"_steps{args.steps}"
    write_section(f"qpi_uncertainty{suffix}", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
