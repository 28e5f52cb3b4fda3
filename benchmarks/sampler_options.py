"""Sampler options on the demo task: ŷ0 clipping, ancestral vs DDIM, number of steps.

Trains the ``demo`` preset once per schedule kind (as ``microdiff demo`` does), then samples
the same 8 held-out pairs with each option. Writes the ``sampler_options`` section of
docs/benchmarks.md. Usage::

    .venv/bin/python benchmarks/sampler_options.py [--kinds learned fixed-cosine]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import machine, today, write_section  # noqa: E402

from microdiff.config import load_config  # noqa: E402
from microdiff.data.synthetic import make_filament_pairs  # noqa: E402
from microdiff.demo import TEST_SEED_OFFSET, evaluate_pairs, run_demo  # noqa: E402
from microdiff.predictor import load  # noqa: E402

OPTIONS = [  # (sampler, eta, steps, clip)
    ("ancestral", 1.0, 20, 1.2), ("ancestral", 1.0, 20, None), ("ancestral", 1.0, 50, 1.2),
    ("ddim", 0.0, 20, 1.2), ("ddim", 0.0, 20, None), ("ddim", 0.5, 20, 1.2),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kinds", nargs="+", default=["learned", "fixed-cosine"])
    args = ap.parse_args()
    rows = []
    for kind in args.kinds:
        cfg = load_config("demo")
        cfg.model.schedule.kind = kind
        d = cfg.data
        test = make_filament_pairs(d.n_test, d.size, d.scale, d.photons,
                                   seed=cfg.train.seed + TEST_SEED_OFFSET)
        with tempfile.TemporaryDirectory() as tmp:
            run_demo(Path(tmp), cfg, progress=False)
            model = load(Path(tmp) / "model").model
        for sampler, eta, steps, clip in OPTIONS:
            cfg.sample.sampler, cfg.sample.eta, cfg.sample.steps, cfg.sample.clip = sampler, eta, steps, clip
            s, _, _ = evaluate_pairs(model, test.x, test.y, cfg, cfg.train.seed)
            rows.append((kind, sampler, eta, steps, clip, s))
            print(rows[-1], flush=True)
    lines = [
        "## Sampler options on the demo task (CPU)", "",
        f"Command: `.venv/bin/python benchmarks/sampler_options.py --kinds {' '.join(args.kinds)}`  ",
        f"Machine: {machine()}  ", f"Date: {today()}", "",
        "One 300-step `demo` model per schedule (seed 0), the same 8 held-out filament pairs, "
        "posterior mean of 4 samples. `clip`: bound on |ŷ0| in residual units. One seed.", "",
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
