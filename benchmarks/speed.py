"""Speed and memory: training throughput, sampling time per image and peak memory of the
``demo``, ``demo-regression`` and ``paper`` presets at 64² and 256², with the number of
network calls per sampled image.

Each measurement runs in its own process, so its peak memory is its own: peak resident
memory (RSS) of that process on a CPU, ``torch.cuda.max_memory_allocated`` on a GPU.
Writes the ``speed`` section of docs/benchmarks.md (``speed_gpu`` on a GPU). Usage::

    .venv/bin/python benchmarks/speed.py                 # this machine's device, ~10 min on CPU
    .venv/bin/python benchmarks/speed.py --quick         # demo presets at 64² only
    .venv/bin/python benchmarks/speed.py --sizes 64 256 --presets demo paper

Training: one optimiser step on the full loss at the preset's batch size, random data,
after one warm-up step (CPU: the mean of a few steps; the paper preset: one). Sampling: one
input image, the preset's steps × K samples drawn as one batch. On a CPU the paper preset's
sampling (200 steps × 20 samples) would take hours per image, so a few denoiser steps are
timed and scaled linearly to the preset's steps (every step costs the same); those rows say
"extrapolated".
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import machine, today, write_section  # noqa: E402

from microdiff import load_config  # noqa: E402
from microdiff.regression import build_model  # noqa: E402
from microdiff.train import Trainer  # noqa: E402

MEMORY_LIMIT_GB = 16  # address-space cap of each CPU measurement process
GPU_MEMORY = "torch.cuda.max_memory_allocated"
CPU_MEMORY = ("peak resident memory of a process that does only this measurement (including "
              "Python and torch, about 0.3 GB)")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _peak_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def measure(preset: str, size: int, phase: str, device_name: str, measured_steps: int) -> dict:
    """One measurement (``phase`` train or sample) in this process; returns its figures."""
    device = torch.device(device_name)
    torch.manual_seed(0)
    cfg = load_config(preset)
    model = build_model(cfg.model)
    n_params = sum(p.numel() for p in model.parameters())
    out = {"preset": preset, "size": size, "phase": phase, "params_m": n_params / 1e6}
    if phase == "train":
        cfg.train.warmup = 0
        trainer = Trainer(model, cfg.train, device)
        b = cfg.train.batch_size
        x = torch.randn(b, cfg.model.in_channels, size, size, device=device)
        y = torch.randn(b, cfg.model.out_channels, size, size, device=device)
        repeats = 1 if n_params > 2e7 and device.type == "cpu" else 5
        trainer.train_step(x, y)  # warm-up
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(repeats):
            trainer.train_step(x, y)
        _sync(device)
        step = (time.perf_counter() - t0) / repeats
        out |= {"batch": b, "step_s": step, "images_per_s": b / step}
    else:
        model = model.to(device).eval()
        s = cfg.sample
        has_unc = getattr(model, "has_uncertainty", False)
        steps, k = (s.steps, s.samples) if has_unc else (1, 1)
        run_steps = min(steps, measured_steps)
        x = torch.randn(1, cfg.model.in_channels, size, size, device=device)
        with torch.no_grad():
            model.sample(x, steps=1, samples=k)  # warm-up
            _sync(device)
            t0 = time.perf_counter()
            res = model.sample(x, steps=run_steps, samples=k, generator=None, clip=s.clip)
            _sync(device)
        secs = time.perf_counter() - t0
        calls = getattr(res, "network_calls", 1) + (steps - run_steps)
        out |= {"steps": steps, "samples": k, "calls": calls, "sample_s": secs * steps / run_steps,
                "extrapolated": run_steps < steps}
    out["peak_mb"] = _peak_mb(device)
    return out


def run_child(preset: str, size: int, phase: str, device: str, measured_steps: int) -> dict | None:
    cmd = [sys.executable, __file__, "--child", preset, str(size), phase, device, str(measured_steps)]
    limit = int(MEMORY_LIMIT_GB * 2**30)

    def cap_memory() -> None:  # a measurement that needs more fails alone, cleanly
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    proc = subprocess.run(cmd, capture_output=True, text=True,
                          preexec_fn=cap_memory if device == "cpu" else None)
    if proc.returncode:
        print(f"{preset} {size}² {phase}: failed\n{proc.stderr[-2000:]}", flush=True)
        return {"preset": preset, "size": size, "phase": phase, "failed": proc.stderr.strip()[-200:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        preset, size, phase, device, measured = sys.argv[2:7]
        print(json.dumps(measure(preset, int(size), phase, device, int(measured))))
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="the demo presets at 64² only")
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 256])
    ap.add_argument("--presets", nargs="+", default=["demo", "demo-regression", "paper"])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--paper-steps", type=int, default=1,
                    help="denoiser steps timed for presets too slow to sample fully here")
    args = ap.parse_args()
    if args.quick:
        args.sizes, args.presets = [64], ["demo", "demo-regression"]
    rows = []
    for preset in args.presets:
        for size in args.sizes:
            cfg = load_config(preset)
            slow = preset == "paper" and args.device == "cpu"
            measured = args.paper_steps if slow else cfg.sample.steps
            pair = []
            for phase in ("train", "sample"):
                print(f"{preset} {size}² {phase} ...", flush=True)
                pair.append(run_child(preset, size, phase, args.device, measured))
                print(pair[-1], flush=True)
            rows.append(pair)
    gpu = args.device == "cuda"
    flags = " --quick" if args.quick else ""
    if not args.quick:
        flags += f" --sizes {' '.join(map(str, args.sizes))} --presets {' '.join(args.presets)}"
    lines = [
        f"## Speed and memory ({'GPU' if gpu else 'CPU'})", "",
        f"Command: `.venv/bin/python benchmarks/speed.py{flags}`  ",
        f"Machine: {machine()}  ", f"Date: {today()}", "",
        "Training: one optimiser step (the full loss: denoiser, schedule and its derivatives; "
        "the regression preset: its MSE) at the preset's batch size on random data. Sampling: "
        "one input image, the preset's steps × K posterior samples drawn as one batch; network "
        "calls per image = denoiser steps (each covering all K samples) + 1 schedule U-Net call "
        "(the authors' sampler calls both networks at every step: about 2 × steps). Peak "
        f"memory: {GPU_MEMORY if gpu else CPU_MEMORY}.",
        "",
        "| preset | params [M] | size | batch | train step [s] | train images/s | peak train [MB] "
        "| steps × K | network calls / image | sampling [s / image] | peak sampling [MB] |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for tr, sa in rows:
        if "failed" in tr or "failed" in sa:
            why = (tr.get("failed") or sa.get("failed") or "").splitlines()[-1][:120]
            cap = f"; each CPU measurement is capped at {MEMORY_LIMIT_GB} GB" if not gpu else ""
            lines.append(f"| {tr['preset']} | | {tr['size']}² | | failed: {why}{cap} | | | | | | |")
            continue
        mark = " (extrapolated)" if sa["extrapolated"] else ""
        lines.append(f"| {tr['preset']} | {tr['params_m']:.1f} | {tr['size']}² | {tr['batch']} | "
                     f"{tr['step_s']:.2f} | {tr['images_per_s']:.2f} | {tr['peak_mb']:.0f} | "
                     f"{sa['steps']} × {sa['samples']} | {sa['calls']} | {sa['sample_s']:.1f}{mark} | "
                     f"{sa['peak_mb']:.0f} |")
    if any(sa.get("extrapolated") for _, sa in rows):
        lines += ["", f"Extrapolated rows: {args.paper_steps} denoiser step(s) of all K samples timed "
                  "and scaled linearly to the preset's steps."]
    write_section("speed_gpu" if gpu else "speed", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
