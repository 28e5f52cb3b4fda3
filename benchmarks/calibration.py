"""Calibration of the posterior std and the risk-controlling interval (issue 18), measured.

For each seed of the long runs of ``--method`` (``quality.py --long``; this script trains
nothing), the model samples (its preset's K × steps) the 16 **validation** images of
``_protocol.validation_set(2)`` — the calibration set — and the held-out test set of
``quality.py`` (16 simulated images of every structure at signal levels 1 and 9, and the
real BioSR pair's centre 256² crop at levels 01 and 09). Predictions are cached as .npz in
the run folder. Errors are mean − target in the model's normalised target units, as
``microdiff calibrate`` fits them (no affine matching). Reported:

* the std calibration fitted on the calibration set (``microdiff.calibration.fit``, 32²
  tiles), applied to the simulated test images: RMSE / RMV in 10 equal-count bins of the std
  holding 95 % of the pixels, ±1σ and ±2σ coverage pooled and per structure, raw and
  calibrated (figure: RMSE against RMV, both);
* the interval: 100 random splits of the simulated test images in half; λ̂ fitted (α, δ =
  0.1) on one half's tiles, the miscoverage measured on the other half (figure: its
  distribution);
* the real pair: std and interval calibrated on the left half of the crop (16² tiles),
  tested on the right half, at each level;
* the std against two proxies a sceptic would try, on the simulated test images: the local
  intensity of the estimate and |estimate − bicubic input| (Spearman with |error| and AUSE,
  mean over images; higher Spearman and lower AUSE are better).

Writes the ``calibration`` section of docs/benchmarks.md, docs/img/calibration_bins.png and
docs/img/calibration_splits.png. Usage::

    .venv/bin/python benchmarks/calibration.py [--method zmd-scaled] [--seeds 0 1 2] [--samples K]

``--samples K`` samples K chains instead of the preset's (the guide's advice for a std that
matters is K ≥ 16); it writes the section ``calibration_k{K}`` and figures with that suffix,
so the preset's table stays; ``--tag NAME`` appends ``_NAME`` (another method beside the default).
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
from scipy.ndimage import gaussian_filter, uniform_filter  # noqa: E402

from microdiff import calibration as C  # noqa: E402
from microdiff import metrics  # noqa: E402

ALPHA, DELTA, SPLITS = 0.1, 0.1, 100
IMG = P.ROOT / "docs" / "img"
SAMPLED: list[str] = []  # runs whose predictions this invocation computed (not from the cache)


def section_suffix(samples: int | None, uncertainty: str = "samples", tag: str = "") -> str:
    """The suffix of the section and figure names for ``--samples`` (none: the preset's K),
    ``--uncertainty head`` and ``--tag``."""
    return ((f"_k{samples}" if samples else "") + ("_head" if uncertainty == "head" else "")  # K = 0: none
            + (f"_{tag}" if tag else ""))


def predictions(method: str, seed: int, images: list[P.TestImage], tag: str, k: int,
                uncertainty: str = "samples") -> dict[str, dict]:
    """name → {mean, std, y, x} (2-D, normalised units) of the run's model on ``images`` with K =
    ``k`` samples (the std: their spread, or the variance head's σ), cached."""
    preds, computed = P.long_run_outputs(method, seed, images, k, f"calibration-{tag}",
                                         ("mean", "std", "y", "x"), uncertainty=uncertainty)
    if computed:
        SAMPLED.append(f"{method} seed {seed} ({tag})")
    return preds


def _maps(preds: dict[str, dict], names: list[str]) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(preds[n]["std"].astype(np.float64), (preds[n]["mean"] - preds[n]["y"]).astype(np.float64))
            for n in names]


def _coverage(maps, std_map=lambda s: s, k: float = 1.0) -> float:
    return float(np.mean(np.concatenate([(np.abs(e) <= k * std_map(s)).ravel() for s, e in maps])))


def _std_scores(cal: C.StdCalibration, maps, sims) -> dict:
    """A std map on the simulated test maps: ±1σ and ±2σ coverage pooled and per structure,
    and the RMSE / RMV bins."""
    return _calibrated_scores([(cal.apply(s), e) for s, e in maps], sims)


def _calibrated_scores(maps, sims) -> dict:
    """Scores of already calibrated (std, error) maps of the simulated test images ``sims``."""
    std_all = np.concatenate([s.ravel() for s, _ in maps])
    err_all = np.concatenate([e.ravel() for _, e in maps])
    row = {"bins_cal": C.calibration_bins(std_all, err_all)}
    for k in (1, 2):
        row[f"cov{k}_cal"] = _coverage(maps, k=k)
    row["per_structure"] = {st: _coverage([m for m, im in zip(maps, sims, strict=True) if im.structure == st])
                            for st in P.STRUCTURES}
    return row


def cell_scores(cal: C.StdCalibration, preds: dict[str, dict], images: list[P.TestImage]
                ) -> dict[tuple[str, str], tuple[float, float]]:
    """(structure, group) → (RMS of error / calibrated std, ±1σ coverage) over the images of
    that cell: the same numbers on the validation images (which the map was fitted on) and
    on the test images say whether a cell's miscalibration is the model's, not chance."""
    out = {}
    for st in P.STRUCTURES:
        for group in ("sim-low", "sim-high"):
            names = [im.name for im in images if im.structure == st and im.group == group]
            if names:
                z = np.concatenate([(e / cal.apply(s)).ravel() for s, e in _maps(preds, names)])
                out[(st, group)] = (float(np.sqrt(np.mean(z ** 2))), float(np.mean(np.abs(z) <= 1)))
    return out


def _features(std: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """Per pixel [1, log std, log of the 9² local mean std, the 9² local mean of the estimate]
    (``[H·W, 4]``): what a std map conditioned on more than the std could use."""
    s = np.maximum(std, 0.0)
    return np.stack([np.ones(s.size), np.log(s + 1e-4).ravel(), np.log(uniform_filter(s, 9) + 1e-4).ravel(),
                     uniform_filter(mean, 9).ravel()], 1)


def fit_log_linear_variance(features: np.ndarray, error: np.ndarray, iterations: int = 50) -> np.ndarray:
    """w minimising the Gaussian negative log-likelihood Σ η + e²·exp(−η), η = features · w
    (log σ² linear in the features; convex, Newton's method with backtracking)."""
    e2 = error ** 2
    w = np.zeros(features.shape[1])
    w[0] = np.log(np.mean(e2))

    def nll(v: np.ndarray) -> float:
        eta = features @ v
        return float(np.mean(eta + e2 * np.exp(-eta)))

    for _ in range(iterations):
        r = e2 * np.exp(-(features @ w))
        grad = features.T @ (1 - r) / e2.size
        hess = (features * r[:, None]).T @ features / e2.size + 1e-9 * np.eye(w.size)
        step, t, f0 = np.linalg.solve(hess, grad), 1.0, nll(w)
        while nll(w - t * step) > f0 - 1e-4 * t * grad @ step and t > 1e-6:
            t /= 2
        w = w - t * step
        if np.abs(t * step).max() < 1e-8:
            break
    return w


def conditioned_maps(val_preds: dict[str, dict], val_names: list[str], test_preds: dict[str, dict],
                     sims: list[P.TestImage]) -> dict[str, dict]:
    """Std maps that see more than the std, fitted on the validation images and scored on
    the simulated test images: an rms map per half of the estimate's intensity (split at
    the validation median), and a log-linear variance in :func:`_features`."""
    def arrays(preds, names, key):
        return [preds[n][key].astype(np.float64) for n in names]

    test_names = [im.name for im in sims]
    vs, vm, vy = (arrays(val_preds, val_names, k) for k in ("std", "mean", "y"))
    ts, tm, ty = (arrays(test_preds, test_names, k) for k in ("std", "mean", "y"))
    flat = lambda maps: np.concatenate([m.ravel() for m in maps])  # noqa: E731
    edge = float(np.median(flat(vm)))
    halves = [C.fit_std_calibration(flat(vs)[sel], (flat(vm) - flat(vy))[sel])
              for sel in (flat(vm) <= edge, flat(vm) > edge)]
    binned = [(np.where(m <= edge, halves[0].apply(s), halves[1].apply(s)), m - y)
              for s, m, y in zip(ts, tm, ty, strict=True)]
    w = fit_log_linear_variance(np.concatenate([_features(s, m) for s, m in zip(vs, vm, strict=True)]),
                                flat(vm) - flat(vy))
    log_linear = [(np.exp(0.5 * _features(s, m) @ w).reshape(s.shape), m - y)
                  for s, m, y in zip(ts, tm, ty, strict=True)]
    return {"rms per intensity half": _calibrated_scores(binned, sims),
            "log-linear variance (std, local std, local intensity)": _calibrated_scores(log_linear, sims)}


INTERVALS = {  # name → (unit, method)
    "conformal, 32² tiles": ("tile", "conformal"),
    "conformal, images": ("image", "conformal"),
    "risk control (HB), 32² tiles": ("tile", "rcps"),
}


def interval_splits(maps, rng_seed: int, target: str) -> dict[str, list[tuple[float, float, float]]]:
    """Over SPLITS random halves of the held-out ``maps`` (std, error): calibrate (std map and
    interval) on one half as ``microdiff calibrate`` would, measure on the other: per interval
    kind, (pooled miscoverage, fraction of test images with miscoverage ≤ α, mean half-width
    λ̂·std_cal in normalised units) per split."""
    rng = np.random.default_rng(rng_seed)
    out: dict[str, list] = {k: [] for k in INTERVALS}
    for _ in range(SPLITS):
        order = rng.permutation(len(maps))
        half = len(maps) // 2
        cal_maps, test_maps = [maps[i] for i in order[:half]], [maps[i] for i in order[half:]]
        for name, (unit, method) in INTERVALS.items():
            cal = C.fit(cal_maps, ALPHA, DELTA, 32, samples=0, steps=0, source="split", unit=unit,
                        target=target)
            lam = cal.interval_factor
            if method == "rcps":
                lam = C.fit_interval([u for s, e in cal_maps for u in C.tile_units(cal.std.apply(s), e, 32)],
                                     ALPHA, DELTA)
            per = [C.miscoverage(cal.std.apply(s), e, lam) for s, e in test_maps]
            width = float(np.mean([lam * cal.std.apply(s).mean() for s, _ in test_maps]))
            out[name].append((float(np.mean(per)), float(np.mean(np.array(per) <= ALPHA)), width))
    return out


def analyse(method: str, seed: int, rng_seed: int, samples: int | None = None, target: str = "rms",
            uncertainty: str = "samples", mixed: bool = False) -> dict:
    calib_images, test_images = P.validation_set(2), P.test_set(2)
    cfg = P.method_config(method, P.LONG_STEPS, seed)
    k = cfg.sample.samples if samples is None else samples
    cal_preds = predictions(method, seed, calib_images, "val", k, uncertainty)
    test_preds = predictions(method, seed, test_images, "test", k, uncertainty)
    val_maps = _maps(cal_preds, [im.name for im in calib_images])
    cal = C.fit(val_maps, ALPHA, DELTA, 32, samples=k, steps=cfg.sample.steps, source="validation_set(2)",
                target=target)
    sims = [im for im in test_images if im.group.startswith("sim")]
    sim_maps = _maps(test_preds, [im.name for im in sims])
    std_all = np.concatenate([s.ravel() for s, _ in sim_maps])
    err_all = np.concatenate([e.ravel() for _, e in sim_maps])
    row = {"slope": cal.std.slope, "offset": cal.std.offset, "factor": cal.interval_factor,
           "bins_raw": C.calibration_bins(std_all, err_all)} | _std_scores(cal.std, sim_maps, sims)
    for k in (1, 2):
        row[f"cov{k}_raw"] = _coverage(sim_maps, k=k)
    row["targets"] = {t: _std_scores(C.fit_std_calibration(
        np.concatenate([s.ravel() for s, _ in val_maps]), np.concatenate([e.ravel() for _, e in val_maps]),
        target=t), sim_maps, sims) for t in C.STD_TARGETS}
    row["cells_val"] = cell_scores(cal.std, cal_preds, calib_images)
    row["cells_test"] = cell_scores(cal.std, test_preds, sims)
    row["conditioned"] = conditioned_maps(cal_preds, [im.name for im in calib_images], test_preds, sims)
    row["splits"] = interval_splits(val_maps + sim_maps, rng_seed, target)
    # the real pair: calibrate on the left half, test on the right half
    row["real"] = {}
    for im in test_images:
        if not im.group.startswith("real"):
            continue
        std, err = _maps(test_preds, [im.name])[0]
        w = std.shape[1] // 2
        left, right = (std[:, :w], err[:, :w]), (std[:, w:], err[:, w:])
        real_cal = C.fit([left], ALPHA, DELTA, 16, samples=cal.samples, steps=cal.steps, source="left half",
                         target=target)
        s_right = real_cal.std.apply(right[0])
        miss = (C.miscoverage(s_right, right[1], real_cal.interval_factor)
                if real_cal.interval_factor is not None else float("nan"))
        row["real"][im.group] = {"cov1_raw": float(np.mean(np.abs(right[1]) <= right[0])),
                                 "cov1_sim_cal": float(np.mean(np.abs(right[1]) <= cal.std.apply(right[0]))),
                                 "cov1_cal": float(np.mean(np.abs(right[1]) <= s_right)),
                                 "spearman": metrics.spearman_std_error(right[0], right[1]),
                                 "factor": real_cal.interval_factor, "miss": miss}
    # the std against two proxies
    proxies = {"std": [], "intensity": [], "|mean − input|": []}
    for im in sims:
        d = test_preds[im.name]
        err = d["mean"] - d["y"]
        for name, score in (("std", d["std"]), ("intensity", gaussian_filter(d["mean"], 2.0)),
                            ("|mean − input|", np.abs(d["mean"] - d["x"]))):
            proxies[name].append((metrics.spearman_std_error(score, err), metrics.ause(score, err)))
    row["proxies"] = {k: tuple(np.mean(v, axis=0)) for k, v in proxies.items()}
    psnr = {im.name: metrics.psnr(test_preds[im.name]["mean"].astype(np.float64),
                                  test_preds[im.name]["y"].astype(np.float64)) for im in test_images}
    groups = [g for g in ("sim", "real-01", "real-09") if any(im.group.startswith(g) for im in test_images)]
    row["psnr"] = {g: float(np.mean([psnr[im.name] for im in test_images if im.group.startswith(g)]))
                   for g in groups}
    if mixed:
        row["mixed"] = mixed_scores(method, seed, k, uncertainty, target)
    return row


def mixed_scores(method: str, seed: int, k: int, uncertainty: str, target: str) -> dict:
    """The std on held-out images of the *training* distribution (``mixed``: 2–3 structures
    per image, levels 1 and 9; 8 validation images to fit the map, 8 test images to score)."""
    val_images, test_images = P.mixed_set(4, "validation"), P.mixed_set(4, "test")
    val_maps = _maps(predictions(method, seed, val_images, "mixed-val", k, uncertainty),
                     [im.name for im in val_images])
    test_maps = _maps(predictions(method, seed, test_images, "mixed-test", k, uncertainty),
                      [im.name for im in test_images])
    cal = C.fit_std_calibration(np.concatenate([s.ravel() for s, _ in val_maps]),
                                np.concatenate([e.ravel() for _, e in val_maps]), target=target)
    std_all = np.concatenate([s.ravel() for s, _ in test_maps])
    err_all = np.concatenate([e.ravel() for _, e in test_maps])
    cal_maps = [(cal.apply(s), e) for s, e in test_maps]
    by_level = {g: [m for m, im in zip(cal_maps, test_images, strict=True) if im.group == g]
                for g in ("sim-low", "sim-high")}
    return {"cov1_raw": _coverage(test_maps), "cov1_cal": _coverage(cal_maps),
            "cov2_cal": _coverage(cal_maps, k=2), "bins_raw": C.calibration_bins(std_all, err_all),
            "bins_cal": C.calibration_bins(cal.apply(std_all), err_all),
            "per_level": {g: _coverage(m) for g, m in by_level.items()}}


def figures(rows: dict[int, dict], suffix: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    IMG.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(4.6, 4.2), dpi=120)
    top = 0.0
    for seed, r in rows.items():
        for key, style, label in (("bins_raw", "o--", "raw"), ("bins_cal", "s-", "calibrated")):
            rmv, rmse, _ = r[key]
            ax.plot(rmv, rmse, style, ms=4, color=f"C{seed}", alpha=0.85, label=f"seed {seed}, {label}")
            top = max(top, rmv.max(), rmse.max())
    ax.plot([0, top], [0, top], "k:", lw=1, label="ideal")
    ax.set_xlabel("RMV: root-mean predicted variance (bin)")
    ax.set_ylabel("RMSE of the estimate (bin)")
    ax.set_title("Simulated test images, 10 bins of the std")
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(IMG / f"calibration_bins{suffix}.png")
    plt.close(fig)
    kinds = list(INTERVALS)  # tiles, images (the variance head's default) and the earlier risk control
    fig, axes = plt.subplots(1, len(kinds), figsize=(4.2 * len(kinds), 3.2), dpi=120, sharey=True)
    for ax, kind in zip(axes, kinds, strict=True):
        for seed, r in rows.items():
            ax.hist([m for m, _, _ in r["splits"][kind]], bins=20, alpha=0.5, color=f"C{seed}",
                    label=f"seed {seed}")
        ax.axvline(ALPHA, color="k", ls=":", label=f"α = {ALPHA}")
        ax.set_xlabel("miscoverage on the test half")
        ax.set_title(kind, fontsize=9)
        ax.legend(fontsize=7)
    axes[0].set_ylabel(f"splits (of {SPLITS})")
    fig.tight_layout()
    fig.savefig(IMG / f"calibration_splits{suffix}.png")
    plt.close(fig)


def report(method: str, seeds: list[int], rows: dict[int, dict], seconds: float,
           samples: int | None = None, target: str = "rms", uncertainty: str = "samples",
           mixed: bool = False, tag: str = "") -> list[str]:
    def ms(key: str, d: int = 2, f=lambda r, k: r[k]) -> str:
        return P.mean_pm_std([f(rows[s], key) for s in seeds], d)

    cmd = f"benchmarks/calibration.py --method {method} --seeds {' '.join(map(str, seeds))}"
    cmd += f" --samples {samples}" if samples is not None else ""
    cmd += f" --target {target}" if target != "rms" else ""
    cmd += " --uncertainty head" if uncertainty == "head" else ""
    cmd += " --mixed" if mixed else ""
    cmd += f" --tag {tag}" if tag else ""
    suffix = section_suffix(samples, uncertainty, tag)
    k_text = (", the variance head's std" if uncertainty == "head"
              else f", K = {samples}" if samples else "")
    lines = [f"## Calibration of the std and the interval ({method}, {P.LONG_STEPS} steps{k_text})", "",
             f"Command: `.venv/bin/python {cmd}` ({seconds:.0f} s"
             + ("" if SAMPLED else ", every prediction from the cache of an earlier run")
             + f"; {today()}; {machine()}).", "",
             "Fitted on 16 validation images (`_protocol.validation_set(2)`), tested on the 16 simulated "
             "test images of `quality.py` and the real BioSR crop; errors are mean − target in normalised "
             f"units; mean ± std over seeds {', '.join(map(str, seeds))}.", "",
             "| | raw std | calibrated |", "|---|---|---|",
             f"| ±1σ coverage, simulated pooled (0.683) | {ms('cov1_raw')} | {ms('cov1_cal')} |",
             f"| ±2σ coverage, simulated pooled (0.954 if Gaussian) | {ms('cov2_raw')} | {ms('cov2_cal')} |"]

    def ratio_range(key: str) -> str:
        lo = [float(np.min(rows[s][key][1] / rows[s][key][0])) for s in seeds]
        hi = [float(np.max(rows[s][key][1] / rows[s][key][0])) for s in seeds]
        return f"{min(lo):.2f} – {max(hi):.2f}"

    lines += [f"| RMSE / RMV over the 10 bins (all seeds; [0.8, 1.25] wanted) | {ratio_range('bins_raw')} "
              f"| {ratio_range('bins_cal')} |", "",
              "The point estimate on the same images, PSNR [dB] (the real pair: its centre 256² crop; the "
              "quality tables score the centre 128² with more metrics): " + ", ".join(
                  f"{g} {P.mean_pm_std([rows[s]['psnr'][g] for s in seeds])}"
                  for g in rows[seeds[0]].get("psnr", {})) + ".", "",
              "Calibrated ±1σ coverage per structure (pooled: "
              f"{ms('cov1_cal')}; wanted within ±0.08 of it): " + ", ".join(
                  f"{st} {P.mean_pm_std([rows[s]['per_structure'][st] for s in seeds])}"
                  for st in P.STRUCTURES)
              + ". Fitted maps: " + "; ".join(
                  f"seed {s}: std → {rows[s]['slope']:.2f}·std {rows[s]['offset']:+.4f}"
                  for s in seeds) + ".", ""]
    if mixed:
        def mx(key: str, f=lambda v: v) -> str:
            return P.mean_pm_std([f(rows[s]["mixed"][key]) for s in seeds])

        def mx_range(key: str) -> str:
            r = [rows[s]["mixed"][key][1] / rows[s]["mixed"][key][0] for s in seeds]
            return f"{min(float(v.min()) for v in r):.2f} – {max(float(v.max()) for v in r):.2f}"

        lines += ["The same on held-out images of the *training* distribution (`_protocol.mixed_set`: 2–3 "
                  "structures per image, as the `demo` preset trains on; map fitted on 8 validation-stream "
                  "images, scored on 8 test-stream images, levels 1 and 9): where training and test content "
                  "match, as they do for a user who trains on their own pairs.", "",
                  "| | raw std | calibrated |", "|---|---|---|",
                  f"| ±1σ coverage (0.683) | {mx('cov1_raw')} | {mx('cov1_cal')} |",
                  f"| RMSE / RMV over the 10 bins (all seeds) | {mx_range('bins_raw')} "
                  f"| {mx_range('bins_cal')} |",
                  f"| calibrated ±1σ at level 1 / level 9 | | {mx('per_level', lambda v: v['sim-low'])} / "
                  f"{mx('per_level', lambda v: v['sim-high'])} |", ""]
    lines += ["Std maps fitted to other scales of the bins' error (the same validation pixels; simulated "
              "test images; `calibration.STD_TARGETS`): *rms* matches RMSE to RMV, *coverage* makes ±σ "
              "hold 68.27 % of each bin, *balanced* takes their geometric mean. Per-structure: the largest "
              "distance of a structure's ±1σ coverage from the pooled one (wanted ≤ 0.08).", "",
              "| std target | ±1σ | ±2σ | RMSE / RMV over the bins | per-structure ±1σ, largest distance |",
              "|---|---|---|---|---|"]
    variants = {t: {s: rows[s]["targets"][t] for s in seeds} for t in C.STD_TARGETS}
    variants |= {f"{v} (not adopted)": {s: rows[s]["conditioned"][v] for s in seeds}
                 for v in rows[seeds[0]]["conditioned"]}
    for t, tr in variants.items():
        lo = min(float(np.min(tr[s]["bins_cal"][1] / tr[s]["bins_cal"][0])) for s in seeds)
        hi = max(float(np.max(tr[s]["bins_cal"][1] / tr[s]["bins_cal"][0])) for s in seeds)
        dist = [max(abs(v - tr[s]["cov1_cal"]) for v in tr[s]["per_structure"].values()) for s in seeds]
        lines.append(f"| {t}{' (used above)' if t == target else ''} "
                     f"| {P.mean_pm_std([tr[s]['cov1_cal'] for s in seeds])} "
                     f"| {P.mean_pm_std([tr[s]['cov2_cal'] for s in seeds])} | {lo:.2f} – {hi:.2f} "
                     f"| {P.mean_pm_std(dist)} |")
    lines += ["", "The last two rows condition the map on more than the std: a separate rms map for the "
              "darker and the brighter half of the estimate's pixels, and a Gaussian-likelihood fit of "
              "log σ² linear in log std, the log of its 9² local mean and the estimate's 9² local mean.", "",
              "Per structure and signal level, with the pooled map (rms target): RMS of error / calibrated "
              "std (1 is calibrated) and ±1σ coverage, on the validation images the map was fitted on and "
              "on the held-out test images (2 images per cell each; seed means). Where both sets agree, "
              "the cell's miscalibration is the model's (its samples spread too much or too little for "
              "that content) and no map of the std alone can remove it.", "",
              "| structure | level | RMS(err/std) validation | test | ±1σ validation | test |",
              "|---|---|---|---|---|---|"]
    for st in P.STRUCTURES:
        for group in ("sim-low", "sim-high"):
            cell = [(rows[s]["cells_val"][(st, group)], rows[s]["cells_test"][(st, group)]) for s in seeds]
            lines.append(f"| {st} | {group[4:]} | " + " | ".join(
                P.mean_pm_std([c[part][i] for c in cell]) for i in (0, 1) for part in (0, 1)) + " |")
    lines += ["", f"Intervals (α = δ = {ALPHA}) over {SPLITS} random half splits of the 32 held-out "
              "simulated images (the 16 validation and 16 test images pooled; the std map and the interval "
              "fitted on one half, as `microdiff calibrate` would, measured on the other): the share of "
              f"splits whose test half had miscoverage ≤ α (the promise: ≥ {1 - DELTA:.0%}; per seed), the "
              "mean miscoverage, the share of single test images with miscoverage ≤ α, and the mean "
              "half-width λ̂·std (normalised units).", "",
              "| interval | splits held | mean miscoverage | images ≤ α | half-width |",
              "|---|---|---|---|---|"]
    default = C.resolve_unit(C.default_unit(uncertainty), 16, DELTA)  # microdiff calibrate on 16 images
    for kind, (unit, method) in INTERVALS.items():
        per = {s: np.array(rows[s]["splits"][kind]) for s in seeds}
        mark = " (default)" if (unit, method) == (default, "conformal") else ""
        lines.append(f"| {kind}{mark} | "
                     + ", ".join(f"{np.mean(per[s][:, 0] <= ALPHA):.0%}" for s in seeds)
                     + f" | {P.mean_pm_std([per[s][:, 0].mean() for s in seeds], 3)} "
                     f"| {P.mean_pm_std([per[s][:, 1].mean() for s in seeds])} "
                     f"| {P.mean_pm_std([per[s][:, 2].mean() for s in seeds], 3)} |")
    lines += ["", "![RMSE against RMV in bins of the std, raw and calibrated]"
              f"(img/calibration_bins{suffix}.png)", "",
              f"![the interval's miscoverage over random splits](img/calibration_splits{suffix}.png)", "",
              "Real BioSR pair (calibrated on the left half of the crop, tested on the right half; "
              "seed means):", "",
              "| level | ±1σ raw | ±1σ with the simulated calibration | ±1σ calibrated on the left half "
              "| Spearman(std, \\|err\\|) | interval factor | miscoverage (α = 0.1) |", "|---" * 7 + "|"]
    for g in ("real-01", "real-09"):
        if all(g in rows[s]["real"] for s in seeds):
            vals = [rows[s]["real"][g] for s in seeds]

            def m(k: str, d: int = 2, vals=vals) -> str:
                return P.mean_pm_std([v[k] if v[k] is not None else np.nan for v in vals], d)

            lines.append(f"| {g} | {m('cov1_raw')} | {m('cov1_sim_cal')} | {m('cov1_cal')} | {m('spearman')} "
                         f"| {m('factor')} | {m('miss', 3)} |")
    lines += ["", "The std against proxies a sceptic would try (simulated test images, mean over images and "
              "seeds): Spearman with |error| (higher is better) and AUSE (lower is better).", "",
              "| score | Spearman | AUSE |", "|---|---|---|"]
    for name in ("std", "intensity", "|mean − input|"):
        sp = P.mean_pm_std([rows[s]["proxies"][name][0] for s in seeds])
        au = P.mean_pm_std([rows[s]["proxies"][name][1] for s in seeds], 4)
        lines.append(f"| {name.replace('|', chr(92) + '|')} | {sp} | {au} |")
    ause = {k: np.array([rows[s]["proxies"][k][1] for s in seeds]) for k in ("std", "intensity")}
    gap = float(ause["intensity"].mean() - ause["std"].mean())  # > 0: the std is better
    spread = max(float(ause["std"].std()), float(ause["intensity"].std()))
    verdict = ("ranks errors better than" if gap > spread else "does *not* rank errors better than"
               if gap < -spread else "ties (within the seed spread) with")
    tile_role = ("the default for the samples' spread" if default == "tile"
                 else "the default for the head's std below 9 images")
    image_role = "the default for the head's std from 9 images" if default == "image" else "`--unit image`"
    lines += ["", f"How to read it: the std map is fitted to the bins' *{target}* scale of the error (the "
              "std-target table above compares the three), so `NAME_std.tif` is an error scale; errors are "
              "heavy-tailed (most pixels small, a few missed or invented filament pieces large), so a std "
              "matched to the RMS error holds more than 68 % of pixels within ±1σ, one matched to the 68 % "
              "quantile under-states the RMS error, and neither is a coverage promise. The interval is: "
              f"split conformal over 32² *tiles* ({tile_role}) promises that a new tile has at most α of "
              "its pixels outside with probability ≥ 1 − δ if tiles are exchangeable, which tiles of one "
              f"image (sharing its noise and content) are not; over *images* ({image_role}) the promise is "
              "per image and "
              "needs only image exchangeability, but with 16 images λ̂ is the largest image score, and one "
              "image with a near-zero std makes it vacuous (the half-width column: a mean over splits "
              "dragged up by such splits); the Hoeffding–Bentkus risk control bounds only the tiles' "
              "average and held in fewer splits than promised. On the real cell the simulated "
              "calibration does not transfer; calibrating on half of the field of view (16² tiles) "
              "does. The std "
              + verdict + " the local intensity of the estimate by AUSE here."]
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--method", default="zmd-scaled", choices=list(P.METHODS))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--samples", type=int, help="posterior samples K (default: the preset's; 0 with "
                    "--uncertainty head: the one-pass prediction, no samples)")
    ap.add_argument("--target", default="rms", choices=C.STD_TARGETS,
                    help="the bins' error scale the std map is fitted to (microdiff.calibration.STD_TARGETS)")
    ap.add_argument("--uncertainty", default="samples", choices=["samples", "head"],
                    help="the std measured: the samples' spread, or the variance head's σ (a method with "
                         "model.zmd.variance_net, e.g. zmd-scaled-var; the samples are still drawn)")
    ap.add_argument("--mixed", action="store_true",
                    help="also score the std on held-out images of the training distribution (mixed "
                         "structures): 16 more predictions per seed")
    ap.add_argument("--tag", default="", help="appended to the section and figure names, so another "
                    "method's table stands beside the default's")
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    rows = {}
    for seed in args.seeds:
        print(f"{args.method} seed {seed}", flush=True)
        rows[seed] = analyse(args.method, seed, rng_seed=seed, samples=args.samples, target=args.target,
                             uncertainty=args.uncertainty, mixed=args.mixed)
    suffix = section_suffix(args.samples, args.uncertainty, args.tag)
    figures(rows, suffix)
    lines = report(args.method, args.seeds, rows, time.perf_counter() - t0, args.samples, args.target,
                   args.uncertainty, args.mixed, args.tag)
    write_section(f"calibration{suffix}", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
