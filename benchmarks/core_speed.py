"""Training-step time and sampling time per image for the demo and paper presets.

Writes the ``core_speed`` section of docs/benchmarks.md. Usage::

    .venv/bin/python benchmarks/core_speed.py [--sizes 64 128] [--presets demo paper]

Sampling of the paper preset (122 M-parameter denoiser, 200 steps × 20 samples) takes
hours per image on a CPU, so there the time of a few denoiser steps is measured and
scaled to the preset's steps and samples; the table says which rows are extrapolated.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
from _report import machine, today, write_section  # noqa: E402

from microdiff import CVDM, load_config  # noqa: E402


def time_train_step(model: CVDM, batch: int, size: int, repeats: int) -> float:
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    x, y = torch.randn(batch, 1, size, size), torch.randn(batch, 1, size, size)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        model.total_loss(model.loss(x, y)).backward()
        opt.step()

    step()  # warm-up
    t0 = time.perf_counter()
    for _ in range(repeats):
        step()
    return (time.perf_counter() - t0) / repeats


def time_sampling(
    model: CVDM, size: int, steps: int, samples: int, measured_steps: int
) -> tuple[float, int, bool]:
    """Seconds per image for ``steps`` × ``samples``; extrapolated if measured_steps < steps."""
    x = torch.randn(1, 1, size, size)
    run_steps = min(steps, measured_steps)
    model.sample(x, steps=1, samples=samples)  # warm-up
    t0 = time.perf_counter()
    out = model.sample(x, steps=run_steps, samples=samples, generator=torch.Generator().manual_seed(0))
    seconds = time.perf_counter() - t0
    calls = out.network_calls + (steps - run_steps)
    return seconds * steps / run_steps, calls, run_steps < steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    ap.add_argument("--presets", nargs="+", default=["demo", "paper"])
    ap.add_argument("--paper-steps", type=int, default=2, help="denoiser steps measured for paper")
    args = ap.parse_args()
    torch.manual_seed(0)
    rows = []
    for preset in args.presets:
        cfg = load_config(preset)
        model = CVDM.from_config(cfg.model)
        n_params = sum(p.numel() for p in model.parameters()) / 1e6
        big = preset == "paper"
        for size in args.sizes:
            batch = cfg.train.batch_size
            print(f"{preset} {size}x{size}: training step (batch {batch}) ...", flush=True)
            t_step = time_train_step(model, batch, size, repeats=1 if big else 5)
            print(f"{preset} {size}x{size}: sampling ...", flush=True)
            t_img, calls, extrap = time_sampling(
                model, size, cfg.sample.steps, cfg.sample.samples,
                measured_steps=args.paper_steps if big else cfg.sample.steps)
            rows.append((preset, f"{n_params:.1f}", size, batch, t_step, batch / t_step,
                         cfg.sample.steps, cfg.sample.samples, calls, t_img, extrap))
            print(rows[-1], flush=True)
    lines = [
        "## Core speed (CPU)", "",
        f"Command: `.venv/bin/python benchmarks/core_speed.py --sizes {' '.join(map(str, args.sizes))} "
        f"--presets {' '.join(args.presets)}`  ",
        f"Machine: {machine()}  ", f"Date: {today()}", "",
        "Training step: one Adam step on the full CVDM loss (denoiser, schedule, derivatives) "
        "at the preset's batch size, random data. Sampling: one input image, the preset's "
        "steps and K samples (drawn as one batch); network calls per image = denoiser steps "
        "(each covering all K samples) + 1 schedule U-Net call. The authors' sampler makes "
        "about 2 × steps calls (schedule and denoiser every step).", "",
        "| preset | params [M] | size | batch | train step [s] | train images/s "
        "| sampling steps × K | network calls / image | sampling [s / image] |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for p, n, s, b, ts, ips, st, k, calls, ti, ex in rows:
        mark = " (extrapolated)" if ex else ""
        lines.append(f"| {p} | {n} | {s}² | {b} | {ts:.2f} | {ips:.1f} | {st} × {k} | {calls} "
                     f"| {ti:.1f}{mark} |")
    if any(r[-1] for r in rows):
        lines += ["", f"Extrapolated rows: {args.paper_steps} denoiser steps timed and scaled "
                  "linearly to the preset's steps (each step costs the same)."]
    write_section("core_speed", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
