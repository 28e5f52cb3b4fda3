"""Learning curves of the point estimate: why the CVDM mean falls short of regression (issue 17).

Each method is the ``demo`` preset (``demo-regression`` for the regression U-Net) of
``_protocol.METHODS``, trained ``--steps`` steps with a checkpoint every ``--every`` steps
(all kept). Every checkpoint is evaluated on a *curve set* of simulated images that is
neither a training image nor a test image of quality.py (another seed of the test stream):
one image per structure at signal levels 1 and 9, centre ``--crop``² crops. Per checkpoint:

- regression: PSNR/SSIM of the one-pass prediction, EMA and raw weights;
- diffusion: ``--samples`` posterior samples (the preset's sampler: 20 ancestral steps, ŷ0
  clipped to ±1.2) and from them the mean of the first K (K = 1, 2, 4, 8, 16), the fit
  MSE_K = B + V/K over K (B: the error of the model's own posterior mean, V: the sample
  variance; a calibrated posterior has V/B = 1) and its K → ∞ PSNR, and the chains' average
  of ŷ0 at several steps (a Rao–Blackwellised mean; free by-product of sampling); at the
  first checkpoints also the raw (non-EMA) weights; under ZMD the mean network μ(x) alone.

Separates the causes of the gap: (a) training length (the curves), (b) estimator variance
(K = 4 against K → ∞), (d) EMA (raw against EMA). Runs are cached under runs/benchmarks/
(a killed benchmark resumes). Writes the ``learning_curves`` section of docs/benchmarks.md
and docs/img/learning_curves.png. Usage::

    .venv/bin/python benchmarks/learning_curves.py --seeds 0          # ~3 h on one CPU thread
    .venv/bin/python benchmarks/learning_curves.py --report-only      # tables from finished runs
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _protocol as P  # noqa: E402
from _report import machine, today, write_section  # noqa: E402

from microdiff import metrics  # noqa: E402
from microdiff.checkpoint import load_training_state  # noqa: E402
from microdiff.config import Config, apply_overrides  # noqa: E402
from microdiff.data.datasets import simulated  # noqa: E402
from microdiff.data.sources import TEST_STREAM  # noqa: E402
from microdiff.data.synthetic import SimulatorConfig  # noqa: E402
from microdiff.models import build_model  # noqa: E402

CURVE_SEED = 2000  # the curve set: not quality.py's TEST_SEED, not a training stream
KS = (1, 2, 4, 8, 16)
EVAL_STEPS = (250, 500, 1000, 1500, 2000, 2500, 3000)  # checkpoints evaluated (all are kept)
RAW_UNTIL = 500  # raw (non-EMA) weights evaluated at checkpoints up to this step
DEFAULT_METHODS = ["zmd-scaled", "learned", "fixed-linear", "regression"]


def curve_set(crop: int) -> list[tuple[str, torch.Tensor, np.ndarray]]:
    """(name, x ``[1, 1, crop, crop]``, y ``[crop, crop]``) for one image per structure and level."""
    sim, out = SimulatorConfig(scale=2), []
    for level in P.LEVELS.values():
        for kind in P.STRUCTURES:
            p = simulated(kind, 1, 128, CURVE_SEED + level, level, sim, stream=TEST_STREAM)[0]
            o = (128 - crop) // 4 * 2
            out.append((f"{kind}_L{level}", p.x[None, :, o:o + crop, o:o + crop],
                        p.y[0, o:o + crop, o:o + crop].numpy().astype(np.float64)))
    return out


def _scores(pred: torch.Tensor, y: np.ndarray) -> dict[str, float]:
    p = pred.double().numpy()
    return {"psnr": metrics.psnr(p, y), "ssim": metrics.ssim(p, y), "mse": float(np.mean((p - y) ** 2))}


@torch.no_grad()
def evaluate_diffusion(model, cfg, images, samples: int, seed: int) -> dict:
    """K-sample means, the B + V/K fit and chain averages of ŷ0 over ``images``."""
    s, steps = cfg.sample, cfg.sample.steps
    rb_steps = sorted({steps, 3 * steps // 4, steps // 2, steps // 4, 1}, reverse=True)
    per_image = []
    for _, x, y in images:
        gen = torch.Generator().manual_seed(seed)
        mu = model.predict_mean(x)
        x_k = x.repeat_interleave(samples, 0)
        mu_k = None if mu is None else mu.repeat_interleave(samples, 0)
        rb: dict[int, torch.Tensor] = {}

        def eps_fn(y_t, gamma_t, i, x_k=x_k, mu_k=mu_k, rb=rb):
            eps = model.eps_hat(y_t, x_k, gamma_t, mu_k)
            if i in rb_steps:
                y0 = (y_t - (1 - gamma_t).sqrt() * eps) / gamma_t.sqrt()
                if s.clip is not None:
                    y0 = y0.clamp(-s.clip / model.scale, s.clip / model.scale)
                rb[i] = model.from_diffused(x_k, y0, mu_k).mean(0)
            return eps

        out = model.sample(x, steps, samples, gen, eta=s.eta, grid=s.grid, clip=s.clip, eps_fn=eps_fn)
        k_samples = out.samples[0, :, 0]  # [K, H, W]
        row = {f"k{k}": _scores(k_samples[:k].mean(0), y) for k in KS if k <= samples}
        row |= {f"rb{i}": _scores(v[0], y) for i, v in rb.items()}
        row["var"] = float(k_samples.double().var(0, correction=1).mean())
        if mu is not None:
            row["mu"] = _scores(model.from_diffused(x, torch.zeros_like(x), mu)[0, 0], y)
        per_image.append(row)
    return _pool(per_image)


def _pool(per_image: list[dict]) -> dict:
    """Mean over images of every score, plus the B + V/K fit of the K-sample means."""
    pooled: dict = {}
    for key in per_image[0]:
        if key == "var":
            pooled["var"] = float(np.mean([r["var"] for r in per_image]))
        else:
            pooled[key] = {m: float(np.mean([r[key][m] for r in per_image])) for m in per_image[0][key]}
    ks = [k for k in KS if f"k{k}" in pooled]
    if len(ks) >= 2:
        a = np.stack([np.ones(len(ks)), 1.0 / np.asarray(ks, float)], 1)
        mse = np.asarray([pooled[f"k{k}"]["mse"] for k in ks])
        (b, v), *_ = np.linalg.lstsq(a, mse, rcond=None)
        k_max = max(ks)
        gain = 10 * np.log10(mse[-1] / b) if b > 0 else float("nan")
        pooled["fit"] = {"B": float(b), "V": float(v), "V_over_B": float(v / b) if b > 0 else float("nan"),
                         "psnr_inf": pooled[f"k{k_max}"]["psnr"] + float(gain)}
    return pooled


@torch.no_grad()
def evaluate_regression(model, images) -> dict:
    return _pool([{"k1": _scores(model(x)[0, 0], y)} for _, x, y in images])


def curve_config(method: str, seed: int, steps: int, every: int) -> tuple[Config, Path]:
    """The run's config (a checkpoint every ``every`` steps, all kept) and its folder."""
    cfg = apply_overrides(P.method_config(method, steps, seed),
                          [f"train.checkpoint_every={every}", "train.keep_checkpoints=1000"])
    return cfg, P.run_dir(P.run_tag(steps), method, seed)


def run_curve(method: str, seed: int, steps: int, every: int, images, samples: int) -> dict:
    """Train (cached) and evaluate every checkpoint (cached in curve.json)."""
    cfg, out = curve_config(method, seed, steps, every)
    info = P.train_cached(cfg, out)
    cache_path = out / "curve.json"
    cache = json.loads(cache_path.read_text()) if cache_path.exists() else {"points": {}}
    cache["train"] = info
    for ckpt in sorted((out / "checkpoints").glob("step_*.pt")):
        step = int(ckpt.stem.split("_")[1])
        if str(step) in cache["points"] or step not in EVAL_STEPS:
            continue
        t0 = time.perf_counter()
        state = load_training_state(ckpt)
        point = {}
        for which in ("ema", "model"):
            if which == "model" and step > RAW_UNTIL:
                continue
            torch.manual_seed(0)
            model = build_model(cfg.model)
            model.load_state_dict(state[which])
            model.eval()
            if cfg.model.kind == "regression":
                point[which] = evaluate_regression(model, images)
            else:
                point[which] = evaluate_diffusion(model, cfg, images, samples if which == "ema" else 4, seed)
        point["eval_seconds"] = time.perf_counter() - t0
        cache["points"][str(step)] = point
        P._write_json(cache_path, cache)
        est = point["ema"].get("fit", {}).get("psnr_inf")
        print(f"  {method} seed {seed} step {step}: PSNR K1 {point['ema']['k1']['psnr']:.2f}"
              + (f", K4 {point['ema']['k4']['psnr']:.2f}, K∞ {est:.2f}" if est else "")
              + f" ({point['eval_seconds']:.0f} s)", flush=True)
    return cache


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", nargs="+", default=DEFAULT_METHODS, choices=list(P.METHODS))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=P.LONG_STEPS)
    ap.add_argument("--every", type=int, default=P.CURVE_EVERY)
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--crop", type=int, default=64)
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--jobs", type=int, default=1,
                    help="train this many runs at once (own processes, an equal share of the CPU "
                         "threads each), then evaluate them one after another")
    ap.add_argument("--tag", default="", help="appended to the section and figure names, so another "
                    "set of methods does not replace the default section")
    args = ap.parse_args()
    images = curve_set(args.crop)
    results: dict[str, dict[int, dict]] = {m: {} for m in args.methods}
    if args.jobs > 1 and not args.report_only:
        P.train_many([curve_config(m, seed, args.steps, args.every) for seed in args.seeds
                      for m in args.methods], args.jobs)
    for seed in args.seeds:
        for method in args.methods:
            out = P.run_dir(P.run_tag(args.steps), method, seed)
            if args.report_only:
                if (out / "curve.json").exists():
                    results[method][seed] = json.loads((out / "curve.json").read_text())
                continue
            print(f"{method} seed {seed}", flush=True)
            results[method][seed] = run_curve(method, seed, args.steps, args.every, images, args.samples)
    report(args, {m: r for m, r in results.items() if r})


def _series(per_seed: dict[int, dict], which: str, key: str, metric: str = "psnr"
            ) -> tuple[list[int], list[float], list[float]]:
    """Steps present in every seed, mean and std over seeds of ``point[which][key][metric]``."""
    common = sorted(set.intersection(*[{int(s) for s in r["points"]} for r in per_seed.values()]))
    vals = []
    for step in common:
        v = []
        for r in per_seed.values():
            p = r["points"][str(step)].get(which, {})
            if key in p:
                v.append(p[key][metric])
        vals.append(v)
    keep = [i for i, v in enumerate(vals) if v]
    return ([common[i] for i in keep], [float(np.mean(vals[i])) for i in keep],
            [float(np.std(vals[i])) for i in keep])


def report(args, results: dict[str, dict[int, dict]]) -> None:
    if not results:
        print("no finished runs")
        return
    cmd = (f".venv/bin/python benchmarks/learning_curves.py --methods {' '.join(results)} "
           f"--seeds {' '.join(map(str, args.seeds))} --steps {args.steps}"
           + (f" --tag {args.tag}" if args.tag else ""))
    suffix = f"_{args.tag}" if args.tag else ""
    seeds_done = {m: sorted(r) for m, r in results.items()}
    lines = [
        "## Learning curves of the point estimate (CPU" + (f"; {args.tag}" if args.tag else "") + ")", "",
        f"Command: `{cmd}`  ", f"Machine: {machine()}  ", f"Date: {today()}", "",
        f"Each method: the `demo` preset of benchmarks/_protocol.py (1.0 M-parameter U-Net, batch 8, "
        f"64² patches, Adam 1e-3, EMA 0.99), trained {args.steps} steps, a checkpoint every "
        f"{args.every}. Evaluated on a *curve set* that is neither training nor test data: one "
        f"simulated image per structure at signal levels 1 and 9 (seed {CURVE_SEED} of the test "
        f"stream), centre {args.crop}² crops; PSNR after CARE's affine matching, mean over the 8 "
        "images, then mean ± std over seeds. Diffusion: 16 samples × 20 ancestral steps (ŷ0 clipped "
        "to ±1.2); *K*: mean of the first K samples; *K→∞*: from the fit MSE_K = B + V/K; "
        "*RB@i*: the chains' average of ŷ0 at sampling step i (of 20, counting down).", "",
        "Seeds finished: " + ", ".join(f"{m} {s}" for m, s in seeds_done.items()) + ".", ""]
    rows = []
    for m, per_seed in results.items():
        reg = P.METHODS[m][0] == "demo-regression"
        keys = [("k1", "regression (EMA)")] if reg else [
            ("k1", "K=1"), ("k4", "K=4"), ("k16", "K=16"), ("rb10", "RB@10"), ("rb20", "RB@20")]
        if "zmd" in m:
            keys.append(("mu", "μ(x)"))
        for key, label in keys:
            steps, mean, std = _series(per_seed, "ema", key)
            if steps:
                rows.append((m, label, steps, mean, std))
        if not reg:
            steps, mean, std = _series_fit(per_seed)
            if steps:
                rows.append((m, "K→∞ (fit)", steps, mean, std))
        else:
            steps, mean, std = _series(per_seed, "model", "k1")
            if steps:
                rows.append((m, "regression (raw)", steps, mean, std))
    all_steps = sorted({s for r in rows for s in r[2]})
    shown = [s for s in all_steps if s in (250, 500, 1000, 1500, 2000, 2500, 3000) or s == all_steps[-1]]
    lines += ["| method | estimate | " + " | ".join(f"{s}" for s in shown) + " |",
              "|---|---|" + "---|" * len(shown)]
    rows = [r for r in rows if np.isfinite(r[3]).any()]  # e.g. a K→∞ fit that never converged
    for m, label, steps, mean, std in rows:
        one_seed = len(results[m]) == 1
        cells = [("–" if s not in steps or not np.isfinite(mean[steps.index(s)])  # e.g. a fit with B ≤ 0
                  else f"{mean[steps.index(s)]:.2f}" if one_seed
                  else f"{mean[steps.index(s)]:.2f} ± {std[steps.index(s)]:.2f}") for s in shown]
        lines.append(f"| {m} | {label} | " + " | ".join(cells) + " |")
    def v_over_b(per: dict[int, dict]) -> str:
        v = np.nanmean([_last(r)["ema"]["fit"]["V_over_B"] for r in per.values()])
        return f"{v:.2f}" if np.isfinite(v) else "– (the K-sample errors do not follow B + V/K)"

    lines += ["", "V/B of the fit (1 = calibrated spread; > 1: over-dispersed samples) at the last "
              "checkpoint: " + ", ".join(
                  f"{m} {v_over_b(per)}"
                  for m, per in results.items() if "fit" in _last(next(iter(per.values())))["ema"]) + "."]
    lines += time_to_quality(results)
    img = P.ROOT / "docs" / "img" / f"learning_curves{suffix}.png"
    _plot(img, rows, _point_series(results))
    lines += ["", f"![PSNR of the point estimate against training steps](img/{img.name})"]
    write_section(f"learning_curves{suffix}", "\n".join(lines))
    print("\n".join(lines))


def _point_key(method: str, point: dict) -> str:
    """The estimate a user gets from ``method``: μ(x) with the mean-network estimate, the mean
    of 8 samples (the demo's K) for the other diffusion models, the prediction for regression."""
    cfg = P.method_config(method, P.LONG_STEPS, 0)
    if cfg.model.kind == "regression":
        return "k1"
    return "mu" if cfg.sample.point_estimate == "mean-net" and "mu" in point else "k8"


def _seconds_per_step(method: str, seeds: list[int]) -> float:
    """Median wall-clock seconds per training step in the runs' stats (shared CPU: indicative)."""
    per = []
    for seed in seeds:
        path = P.run_dir(P.run_tag(P.LONG_STEPS), method, seed) / "stats.jsonl"
        rows = [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()] if path.exists() else []
        rows = [r for r in rows if r.get("kind") == "train"]
        per += [(b["seconds"] - a["seconds"]) / (b["step"] - a["step"])
                for a, b in zip(rows, rows[1:], strict=False)
                if b["step"] > a["step"] and b["seconds"] > a["seconds"]]
    return float(np.median(per)) if per else float("nan")


def _point_series(results: dict[str, dict[int, dict]]) -> list[tuple]:
    """Per method: (method, label, steps, PSNR mean, PSNR std, SSIM mean, SSIM std, s / step) of
    the estimate a user gets (``_point_key``), over the seeds every step has."""
    out = []
    for m, per_seed in results.items():
        key = _point_key(m, _last(next(iter(per_seed.values())))["ema"])
        st, mn, sd = _series(per_seed, "ema", key)
        _, ms, ss = _series(per_seed, "ema", key, "ssim")
        if st:
            label = {"mu": "μ(x)", "k8": "mean of 8 samples", "k1": "prediction"}[key]
            out.append((m, label, st, mn, sd, ms, ss, _seconds_per_step(m, list(per_seed))))
    return out


def time_to_quality(results: dict[str, dict[int, dict]]) -> list[str]:
    """Per method: the point estimate's PSNR and SSIM at the last checkpoint and the first evaluated
    step (and the training seconds it stands for) where the PSNR is within 0.3 dB of regression's
    final PSNR (mean over seeds)."""
    reg = [m for m in results if P.method_config(m, P.LONG_STEPS, 0).model.kind == "regression"]
    if not reg:
        return []
    steps, mean, _ = _series(results[reg[0]], "ema", "k1")
    target = mean[-1] - 0.3
    lines = ["", f"Time to quality: the first evaluated step at which the point estimate is within 0.3 dB of "
             f"regression's PSNR at step {steps[-1]} ({mean[-1]:.2f} dB), and the training seconds that "
             "step stands for at the median seconds per step of these runs (one thread on a shared "
             "2-core CPU: indicative only).", "",
             "| method | point estimate | PSNR at the last step | SSIM at the last step | reaches "
             "regression − 0.3 dB at step | ≈ training seconds to reach it | s / step |",
             "|---|---|---|---|---|---|---|"]
    for m, label, st, mn, sd, ms, ss, sps in _point_series(results):
        reach = next((s for s, v in zip(st, mn, strict=True) if v >= target), None)
        one = len(results[m]) == 1
        lines.append(f"| {m} | {label} | {mn[-1]:.2f}{'' if one else f' ± {sd[-1]:.2f}'} (step {st[-1]}) | "
                     f"{ms[-1]:.3f}{'' if one else f' ± {ss[-1]:.3f}'} | "
                     f"{reach if reach is not None else 'not reached'} | "
                     f"{f'{reach * sps:.0f}' if reach is not None else '–'} | {sps:.2f} |")
    return lines


def _last(r: dict) -> dict:
    return r["points"][str(max(int(s) for s in r["points"]))]


def _series_fit(per_seed: dict[int, dict]) -> tuple[list[int], list[float], list[float]]:
    common = sorted(set.intersection(*[{int(s) for s in r["points"]} for r in per_seed.values()]))
    vals = [[r["points"][str(s)]["ema"]["fit"]["psnr_inf"] for r in per_seed.values()] for s in common]
    return common, [float(np.mean(v)) for v in vals], [float(np.std(v)) for v in vals]


def _plot(path: Path, rows, points) -> None:
    """Left: μ(x), regression and the 4- and 16-sample means against training steps (the
    K→∞ fit, unstable, and the chain averages only in the table); right: the estimate a user
    gets against training seconds (steps × the runs' median seconds per step). One colour per
    method in both panels."""
    import matplotlib.pyplot as plt

    from microdiff.plots import save_figure

    colors = {m: f"C{i}" for i, m in enumerate(dict.fromkeys(r[0] for r in rows))}
    styles = {"μ(x)": "-", "regression (EMA)": "-", "K=16": "--", "K=4": ":"}
    fig, (ax, ax_t) = plt.subplots(1, 2, figsize=(11, 4), dpi=120)
    for m, label, steps, mean, std in rows:
        if label in styles:
            ax.errorbar(steps, mean, yerr=std, marker="o", ms=3, capsize=2, color=colors[m],
                        linestyle=styles[label], label=f"{m}: {label}")
    for m, label, steps, mean, std, *_, sps in points:
        ax_t.errorbar(np.asarray(steps) * sps, mean, yerr=std, marker="o", ms=3, capsize=2,
                      color=colors.get(m), label=f"{m}: {label}")
    ax.set_xlabel("training steps")
    ax_t.set_xlabel("training seconds (one thread, shared CPU; indicative)")
    for a in (ax, ax_t):
        a.set_ylabel("PSNR of the point estimate [dB]")
        a.legend(fontsize=6, ncol=2 if a is ax else 1)
        a.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)


if __name__ == "__main__":
    main()
