"""Where the sampler starts: ``sample.gamma_min`` on the long runs, chosen on validation images.

The learned schedule of the mean-net design drifts to γ(1) ≈ 1e-5 during training; starting
the sampler there makes the first ŷ0 = (y − √(1−γ) ε̂)/√γ amplify ε̂'s errors ~300× and some
chains never recover. This script samples the 2000-step runs of ``quality.py --long`` (it
trains nothing) with each floor on 8 **validation** images — one per structure and signal
level from a simulator stream that no benchmark reports (``_protocol.validation_set``)
— so the preset's value is not tuned on the test set. Per image: one posterior sample's
PSNR (mean over the K samples, and the worst), its FRC and spectral resolution (medians),
and the std's ±1σ / ±2σ coverage and Spearman rank correlation with the point estimate's
error. Results are cached per run under ``runs/benchmarks/long/<method>/seed<s>/``.
Writes the ``sampler_floor`` section of docs/benchmarks.md. Usage::

    .venv/bin/python benchmarks/sampler_floor.py [--method zmd-scaled] [--seeds 0 1 2]
        [--floors none 1e-3 3e-3 1e-2]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _protocol as P  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from _report import machine, today, write_section  # noqa: E402

from microdiff.data.synthetic import SimulatorConfig  # noqa: E402
from microdiff.evaluation import image_metrics  # noqa: E402

K = 4  # samples per image (the demo preset's K)
KEYS = ("sample_psnr", "sample_psnr_worst", "sample_frc", "sample_sharpness", "coverage_1sigma",
        "coverage_2sigma", "spearman_std_error", "psnr")


def validation_images() -> list[tuple[str, object]]:
    """One pair per structure and signal level: :func:`_protocol.validation_set` (named as
    this script's cache knows them)."""
    return [(f"{im.structure}_L{im.name.rsplit('_L', 1)[1]}", im.pair) for im in P.validation_set(1)]


def floor_name(floor: float | None) -> str:
    return "none" if floor is None else f"{floor:g}"


def evaluate(method: str, seed: int, floor: float | None, images) -> dict[str, float]:
    """Aggregates (medians for resolutions, else means) over ``images``, cached."""
    out = P.run_dir("long", method, seed)
    cache = out / f"sampler_floor-{floor_name(floor)}.json"
    key = {"images": [n for n, _ in images], "samples": K, "floor": floor}
    if cache.exists() and (saved := json.loads(cache.read_text()))["key"] == key:
        return saved["agg"]
    cfg = P.method_config(method, P.LONG_STEPS, seed)
    if not (out / "train.json").exists():
        raise SystemExit(f"{out} has no finished {P.LONG_STEPS}-step run: run quality.py --long first")
    model = P.model_at(out, cfg, P.LONG_STEPS)
    px_um = SimulatorConfig(scale=2).target_pixel_um
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for _, p in images:
        with torch.no_grad():
            res = model.sample(p.x[None], steps=cfg.sample.steps, samples=K, generator=gen,
                               **(cfg.sample.options() | {"gamma_min": floor}))
        y = p.y[0].numpy().astype(np.float64)
        m = image_metrics(res.mean[0, 0].numpy().astype(np.float64), y, px_um,
                          res.std[0, 0].numpy().astype(np.float64))
        ones = [image_metrics(res.samples[0, i, 0].numpy().astype(np.float64), y, px_um) for i in range(K)]
        rows.append({"psnr": m["psnr"], "coverage_1sigma": m["coverage_1sigma"],
                     "coverage_2sigma": m["coverage_2sigma"], "spearman_std_error": m["spearman_std_error"],
                     "sample_psnr": float(np.mean([o["psnr"] for o in ones])),
                     "sample_psnr_worst": float(np.min([o["psnr"] for o in ones])),
                     "sample_frc": float(np.median([o["frc_resolution"] for o in ones])),
                     "sample_sharpness": float(np.median([o["spectral_resolution"] for o in ones]))})
    agg = {k: float(np.median([r[k] for r in rows]) if k in ("sample_frc", "sample_sharpness")
                    else np.mean([r[k] for r in rows])) for k in KEYS}
    P._write_json(cache, {"key": key, "agg": agg, "rows": rows})
    return agg


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--method", default="zmd-scaled", choices=list(P.METHODS))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--floors", nargs="+", default=["none", "1e-3", "3e-3", "1e-2"])
    args = ap.parse_args()
    torch.set_num_threads(1)
    floors = [None if f == "none" else float(f) for f in args.floors]
    images = validation_images()
    t0 = time.perf_counter()
    results = {}
    for floor in floors:
        for seed in args.seeds:
            print(f"{args.method} seed {seed}, gamma_min {floor_name(floor)}", flush=True)
            results[(floor, seed)] = evaluate(args.method, seed, floor, images)
    preset = P.method_config(args.method, P.LONG_STEPS, 0).sample.gamma_min
    cmd = "benchmarks/sampler_floor.py " + " ".join(
        [f"--method {args.method}", "--seeds", *map(str, args.seeds), "--floors", *args.floors])
    lines = [f"## Where the sampler starts: `sample.gamma_min` ({args.method}, {P.LONG_STEPS} steps)", "",
             f"Command: `.venv/bin/python {cmd}` ({time.perf_counter() - t0:.0f} s; "
             f"{today()}; {machine()}).", "",
             f"{len(images)} **validation** images (one per structure and signal level from a simulator "
             "stream no benchmark reports: the floor is chosen here, not on the test set), K = "
             f"{K} samples × {P.method_config(args.method, P.LONG_STEPS, 0).sample.steps} steps; "
             "mean ± std over seeds "
             f"{', '.join(map(str, args.seeds))}. *1 sample*: one posterior sample's PSNR (mean of the "
             "K; *worst*: the lowest of the K, averaged over images), FRC and sharpness (spectral "
             "resolution; medians over images and samples, nm); coverage and Spearman: the std "
             "against the point estimate's error (calibrated: 0.683 / 0.954). The point estimate, "
             "μ(x), does not depend on the floor (PSNR column). The method's setting: "
             f"`gamma_min = {floor_name(preset)}`.", "",
             "| gamma_min | PSNR μ(x) | PSNR 1 sample | worst of K | FRC 1 sample [nm] "
             "| sharpness 1 sample [nm] | ±1σ | ±2σ | Spearman |", "|---" * 9 + "|"]
    for floor in floors:
        runs = [results[(floor, s)] for s in args.seeds]
        cells = [P.mean_pm_std([r[k] for r in runs], d) for k, d in (
            ("psnr", 2), ("sample_psnr", 2), ("sample_psnr_worst", 2), ("sample_frc", 0),
            ("sample_sharpness", 0), ("coverage_1sigma", 2), ("coverage_2sigma", 2),
            ("spearman_std_error", 2))]
        lines.append(f"| {floor_name(floor)} | " + " | ".join(cells) + " |")
    write_section("sampler_floor", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
