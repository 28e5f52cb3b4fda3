"""Sampler options on the demo task: ŷ0 clipping, ancestral vs DDIM, number of steps.

Trains the ``demo`` preset once per schedule kind (as ``microdiff demo`` does), then samples
the demo's 8 held-out simulated images (two per structure) with each option.
Writes the ``sampler_options`` section of
docs/benchmarks.md. Usage::

    .venv/bin/python benchmarks/sampler_options.py [--kinds learned fixed-cosine]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _protocol as P  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from _report import machine, today, write_section  # noqa: E402

from microdiff import metrics  # noqa: E402
from microdiff.demo import held_out_pairs, run_demo  # noqa: E402
from microdiff.predictor import load  # noqa: E402

OPTIONS = [  # (sampler, eta, steps, clip)
    ("ancestral", 1.0, 20, 1.2), ("ancestral", 1.0, 20, None), ("ancestral", 1.0, 50, 1.2),
    ("ddim", 0.0, 20, 1.2), ("ddim", 0.0, 20, None), ("ddim", 0.5, 20, 1.2),
]


def mean_scores(model, pairs, cfg) -> dict[str, float]:
    """Mean PSNR/SSIM of the posterior mean and of the bicubic input over ``pairs``."""
    gen = torch.Generator().manual_seed(cfg.train.seed)
    s = cfg.sample
    rows = {"psnr_mean": [], "ssim_mean": [], "psnr_bicubic": [], "ssim_bicubic": []}
    for p in pairs:
        with torch.no_grad():
            out = model.sample(p.x[None], steps=s.steps, samples=s.samples, generator=gen,
                               **s.options())
        y = p.y[0].numpy()
        for name, img in (("mean", out.mean[0, 0].numpy()), ("bicubic", p.x[0].numpy())):
            rows[f"psnr_{name}"].append(metrics.psnr(img, y))
            rows[f"ssim_{name}"].append(metrics.ssim(img, y))
    return {k: float(np.mean(v)) for k, v in rows.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kinds", nargs="+", default=["learned", "fixed-cosine"])
    args = ap.parse_args()
    rows = []
    for kind in args.kinds:
        cfg = P.sampled_demo()  # the std from samples: the schedule shapes it
        cfg.model.schedule.kind = kind
        test = held_out_pairs(cfg, [])
        with tempfile.TemporaryDirectory() as tmp:
            run_demo(Path(tmp), cfg, progress=False)
            model = load(Path(tmp) / "model").model
        for sampler, eta, steps, clip in OPTIONS:
            cfg.sample.eta, cfg.sample.steps, cfg.sample.clip = eta, steps, clip  # ancestral: η = 1
            s = mean_scores(model, test, cfg)
            rows.append((kind, sampler, eta, steps, clip, s))
            print(rows[-1], flush=True)
    lines = [
        "## Sampler options on the demo task (CPU)", "",
        f"Command: `.venv/bin/python benchmarks/sampler_options.py --kinds {' '.join(args.kinds)}`  ",
        f"Machine: {machine()}  ", f"Date: {today()}", "",
        "One `demo` model per schedule (seed 0; 400 steps on simulated mixed structures), the "
        "demo's 8 held-out 128² images (two per structure), posterior mean of 8 samples. "
        "`clip`: bound on |ŷ0| in residual units. One seed.", "",
        "| schedule | sampler | η | steps | clip | PSNR mean [dB] | SSIM mean "
        "| PSNR bicubic [dB] | SSIM bicubic |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for kind, sampler, eta, steps, clip, s in rows:
        lines.append(f"| {kind} | {sampler} | {eta:g} | {steps} | {clip if clip else 'none'} | "
                     f"{s['psnr_mean']:.2f} | {s['ssim_mean']:.3f} | {s['psnr_bicubic']:.2f} | "
                     f"{s['ssim_bicubic']:.3f} |")
    write_section("sampler_options", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
