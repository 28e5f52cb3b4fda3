"""Few-step sampling (issue 20, item 2): the 20-step sampler against 2-8-step ones, same model.

Each long run (``quality.py --long``, 2000 steps) of ``--method`` draws K = ``--samples``
posterior samples of every simulated test image (``_protocol.test_set(1)``: one image per
structure and signal level 1 and 9, 8 in all) with each sampler ``STEPS:ETA``
(number of denoiser calls per sample, DDIM stochasticity η; 1 ancestral), the learned
schedule's own per-pixel grid, the preset's ``gamma_min`` and clip. Reported per sampler,
mean ± std over seeds: PSNR / SSIM of the K-sample mean (μ(x) + the mean of the K residual
samples on the default design), PSNR, FRC resolution and sharpness of one sample, and the
samples' std against the error of the point estimate: Spearman, raw ±1σ coverage and ±1σ
coverage after a binned-linear calibration fitted on the validation images
(``_protocol.validation_set(1)``, 8) with the same sampler. Issue 20's acceptance: a ≤ 4-call
sampler within 0.3 dB (K-mean PSNR) and 10 % (single-sample FRC) of the 20-step one.
Results are cached per run and sampler (``few_step-*.json``). Writes the ``few_step`` section
of docs/benchmarks.md. Usage::

    .venv/bin/python benchmarks/few_step.py [--method zmd-scaled-var] [--seeds 0 1 2]
        [--samplers 20:1 4:1 4:0 2:1] [--samples 8]
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

from microdiff.calibration import fit_std_calibration  # noqa: E402
from microdiff.evaluation import image_metrics  # noqa: E402
from microdiff.metrics import affine_fit, coverage, spearman_std_error  # noqa: E402

REFERENCE = "20:1"
COLUMNS = [("kmean_psnr", "K-mean PSNR", 2), ("kmean_ssim", "K-mean SSIM", 3),
           ("sample1_psnr", "1-sample PSNR", 2), ("sample1_frc_resolution", "1-sample FRC [nm]", 0),
           ("sample1_spectral_resolution", "1-sample sharpness [nm]", 0),
           ("spearman", "Spearman(std, |err|)", 2), ("cov_raw", "±1σ raw", 2),
           ("cov_cal", "±1σ calibrated", 2), ("seconds", "s / image", 2)]


def parse_sampler(text: str) -> tuple[int, float]:
    steps, _, eta = text.partition(":")
    return int(steps), float(eta or 1.0)


def draw(model, cfg, images: list[P.TestImage], steps: int, eta: float, samples: int, seed: int
         ) -> list[dict]:
    """Per image: metrics of the K-sample mean and one sample, and the std/error arrays of
    the point estimate (in its matched units), with the seconds per image."""
    opts = cfg.sample.options() | {"eta": eta, "uncertainty": "samples"}
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for im in images:
        t0 = time.perf_counter()
        with torch.no_grad():
            res = model.sample(im.pair.x[None], steps=steps, samples=samples, generator=gen, **opts)
        sec = time.perf_counter() - t0
        y = im.pair.y[0].numpy().astype(np.float64)
        kmean = res.mean if res.sample_mean is None else res.sample_mean
        km = image_metrics(kmean[0, 0].numpy().astype(np.float64), y, im.pixel_size_um)
        one = image_metrics(res.samples[0, 0, 0].numpy().astype(np.float64), y, im.pixel_size_um)
        mean = res.mean[0, 0].numpy().astype(np.float64)
        a, b = affine_fit(mean, y)
        rows.append({"image": im.name, "seconds": sec,
                     **{f"kmean_{k}": v for k, v in km.items()},
                     **{f"sample1_{k}": v for k, v in one.items()},
                     "std": res.std[0, 0].numpy().astype(np.float64) * abs(a), "error": a * mean + b - y})
    return rows


def evaluate(method: str, seed: int, steps: int, eta: float, samples: int) -> dict | None:
    """Cached summary of one run and sampler (None: the run is missing)."""
    out = P.run_dir("long", method, seed)
    if not (out / "train.json").exists():
        return None
    cache = out / f"few_step-{steps}x{eta:g}-K{samples}.json"
    if cache.exists():
        return json.loads(cache.read_text())
    cfg = P.method_config(method, P.LONG_STEPS, seed)
    model = P.model_at(out, cfg, P.LONG_STEPS)
    val = draw(model, cfg, P.validation_set(), steps, eta, samples, seed + 1000)
    test = draw(model, cfg, P.test_set(real=False), steps, eta, samples, seed)
    cal = fit_std_calibration(np.concatenate([r["std"].ravel() for r in val]),
                              np.concatenate([r["error"].ravel() for r in val]))
    std = np.concatenate([r["std"].ravel() for r in test])
    err = np.concatenate([r["error"].ravel() for r in test])
    summary = {k: float(np.mean([r[k] for r in test])) for k in
               ("kmean_psnr", "kmean_ssim", "sample1_psnr", "seconds")}
    for k in ("sample1_frc_resolution", "sample1_spectral_resolution"):  # median image, like quality.py
        summary[k] = float(np.median([r[k] for r in test]))
    summary |= {"spearman": float(np.mean([spearman_std_error(r["std"], r["error"]) for r in test])),
                "cov_raw": coverage(std, err, 1), "cov_cal": coverage(cal.apply(std), err, 1),
                "calibration": [cal.slope, cal.offset], "images": len(test)}
    P._write_json(cache, summary)
    return summary


def table(method: str, seeds: list[int], samplers: list[str], samples: int) -> tuple[list[str], dict]:
    results: dict[str, list[dict]] = {}
    for text in samplers:
        steps, eta = parse_sampler(text)
        for seed in seeds:
            r = evaluate(method, seed, steps, eta, samples)
            if r is not None:
                results.setdefault(text, []).append(r)
            print(f"{method} seed {seed} {text}: {r and round(r['kmean_psnr'], 3)}", flush=True)
    lines = ["| sampler (calls per sample : η) | seeds | " + " | ".join(c[1] for c in COLUMNS) + " |",
             "|---" * (len(COLUMNS) + 2) + "|"]
    for text, rs in results.items():
        cells = [P.mean_pm_std([r[k] for r in rs], d) for k, _, d in COLUMNS]
        lines.append(f"| {text} | {len(rs)} | " + " | ".join(cells) + " |")
    return lines, results


def verdict(results: dict, samplers: list[str]) -> list[str]:
    """Issue 20's criterion for each ≤ 4-call sampler against the reference, seed-matched means."""
    ref = results.get(REFERENCE)
    if not ref:
        return []
    out = [f"Against the {REFERENCE} sampler (acceptance: K-mean PSNR within 0.3 dB and one "
           "sample's FRC within 10 %, means over the seeds both have):", ""]
    for text in samplers:
        if text == REFERENCE or parse_sampler(text)[0] > 4 or text not in results:
            continue
        n = min(len(ref), len(results[text]))
        dp = np.mean([results[text][i]["kmean_psnr"] - ref[i]["kmean_psnr"] for i in range(n)])
        fr = np.mean([results[text][i]["sample1_frc_resolution"] / ref[i]["sample1_frc_resolution"] - 1
                      for i in range(n)])
        ok = dp >= -0.3 and abs(fr) <= 0.10
        out.append(f"- {text}: K-mean PSNR {dp:+.2f} dB, 1-sample FRC {100 * fr:+.1f} % "
                   f"({n} seed{'s' * (n > 1)}): {'holds' if ok else '**does not hold**'}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--method", default="zmd-scaled-var", choices=list(P.METHODS))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--samplers", nargs="+", default=["20:1", "4:1", "4:0", "2:1"])
    ap.add_argument("--samples", type=int, default=8)
    args = ap.parse_args()
    torch.set_num_threads(1)
    lines, results = table(args.method, args.seeds, args.samplers, args.samples)
    cmd = (f".venv/bin/python benchmarks/few_step.py --method {args.method} --seeds "
           f"{' '.join(map(str, args.seeds))} --samplers {' '.join(args.samplers)} --samples {args.samples}")
    body = ["## Few-step sampling (issue 20)", "", f"Command: `{cmd}` ({today()}; {machine()}).", "",
            f"`{args.method}`'s 2000-step runs, K = {args.samples} samples of each simulated test image "
            "(8: one per structure at levels 1 and 9), the learned schedule's own grid with the "
            "preset's γ floor and clip; the point estimate stays μ(x). Calibrated: a binned-linear "
            "map fitted on the 8 validation images with the same sampler. FRC and sharpness: median "
            "image; the rest: mean over images; ± over seeds. The variance head of `zmd-scaled-var` "
            "plays no part here (the std is the samples'; its other weights train bit-identically to "
            "`zmd-scaled`'s). *s / image*: one thread while other jobs shared the CPU, a rough ratio "
            "only (the timings: *Prediction time per output mode*).", "", *lines, "",
            *verdict(results, args.samplers)]
    write_section("few_step", "\n".join(body))
    print("\n".join(body))


if __name__ == "__main__":
    main()
