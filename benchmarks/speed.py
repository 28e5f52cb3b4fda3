"""Speed and memory: training throughput, sampling time per image and peak memory of the
``demo``, ``demo-regression`` and ``paper`` presets at 64² and 256², with the number of
network calls per sampled image.

Each measurement runs in its own process, so its peak memory is its own: peak resident
memory (RSS) of that process on a CPU, ``torch.cuda.max_memory_allocated`` on a GPU.
Writes the ``speed`` section of docs/benchmarks.md (``speed_gpu`` on a GPU). Usage::

    .venv/bin/python benchmarks/speed.py                 # this machine's device, ~10 min on CPU
    .venv/bin/python benchmarks/speed.py --quick         # demo presets at 64² only
    .venv/bin/python benchmarks/speed.py --sizes 64 256 --presets demo paper
    .venv/bin/python benchmarks/speed.py --sizes 1024 --phases sample --section speed_1024
    bash benchmarks/gpu_check.sh                         # on a lent GPU: CUDA tests + GPU tables

``--phases`` times training or sampling alone; ``--section`` writes another section (so the
default tables stay); ``--child-timeout`` stops one measurement (e.g. a long compile) and
marks its cells failed.

Training: one optimiser step on the full loss at the preset's batch size, random data,
after warm-up steps (CPU: the mean of a few steps; the paper preset: one). Sampling: one
input image, the preset's steps × K samples drawn as one batch (``--sample-steps`` and
``--samples`` override them; issue 7's GPU target is ``--presets paper --sizes 256
--sample-steps 50 --samples 8``). On a CPU the paper preset's sampling (200 steps × 20
samples) would take hours per image, so a few denoiser steps are timed and scaled linearly to
the preset's steps (every step costs the same); those rows say "extrapolated".

Variants (training): ``default`` (the config as it is), and on a GPU ``fp32-eager``
(float32, no channels-last, not compiled) against ``fast`` (bf16 autocast, channels-last,
fused Adam, ``torch.compile`` of the denoiser). Achieved FLOP/s: the forward FLOPs of the
networks one step calls (counted by ``torch.utils.flop_counter``; training: ×3 for the
backward pass, an estimate that leaves out the schedule's derivative passes) per second, and
on a GPU with a known peak the fraction of its dense bf16 peak.
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
from microdiff.models import build_model  # noqa: E402
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


VARIANTS = {"default": {}, "fp32-eager": {"bf16": False, "channels_last": False, "compile": False},
            "fast": {"bf16": True, "channels_last": True, "compile": True}}
BF16_PEAK = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12}  # dense, SXM


def gpu_peak() -> float | None:
    """The dense bf16 peak FLOP/s of this GPU when its name is in :data:`BF16_PEAK`."""
    name = torch.cuda.get_device_name() if torch.cuda.is_available() else ""
    return next((v for k, v in BF16_PEAK.items() if k in name), None)


def forward_flops(model: torch.nn.Module, cfg, batch: int, schedule_batch: int, size: int,
                  device: torch.device) -> float:
    """FLOPs of one denoiser call on ``batch`` images and one schedule U-Net (and ZMD mean)
    call on ``schedule_batch`` (regression: its network on ``batch``)."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.randn(batch, cfg.model.in_channels, size, size, device=device)
    y = torch.randn(batch, cfg.model.out_channels, size, size, device=device)
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        if model.generative:
            model.schedule.lam(x[:schedule_batch])
            mu = model.predict_mean(x)
            model.eps_hat(y, x, torch.full_like(y, 0.5), mu)
        else:
            model(x)
    return float(fc.get_total_flops())


#: samples timed for a preset that predicts in one pass (the demo since issue 20)
ONE_PASS_K = 4


def measure(preset: str, size: int, phase: str, device_name: str, measured_steps: int,
            variant: str = "default", steps_k: tuple[int, int] | None = None) -> dict:
    """One measurement (``phase`` train or sample) in this process; returns its figures."""
    device = torch.device(device_name)
    torch.manual_seed(0)
    cfg = load_config(preset)
    for key, value in VARIANTS[variant].items():
        setattr(cfg.train, key, value)
    model = build_model(cfg.model)
    n_params = sum(p.numel() for p in model.parameters())
    out = {"preset": preset, "size": size, "phase": phase, "params_m": n_params / 1e6,
           "variant": variant}
    if phase == "train":
        cfg.train.warmup = 0
        b = cfg.train.batch_size
        flops = 3 * forward_flops(model.to(device), cfg, b, b, size, device)
        trainer = Trainer(model, cfg.train, device)
        x = torch.randn(b, cfg.model.in_channels, size, size, device=device)
        y = torch.randn(b, cfg.model.out_channels, size, size, device=device)
        repeats = 1 if n_params > 2e7 and device.type == "cpu" else 5
        for _ in range(3 if cfg.train.compile else 1):  # warm-up (compilation)
            trainer.train_step(x, y)
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(repeats):
            trainer.train_step(x, y)
        _sync(device)
        step = (time.perf_counter() - t0) / repeats
        out |= {"batch": b, "step_s": step, "images_per_s": b / step, "flop_per_s": flops / step}
    else:
        model = model.to(device).eval()
        s = cfg.sample
        has_unc = model.generative
        steps, k = steps_k or (s.steps, s.samples or ONE_PASS_K)  # a one-pass preset: time K samples
        steps, k = (steps, k) if has_unc else (1, 1)
        run_steps = min(steps, measured_steps)
        x = torch.randn(1, cfg.model.in_channels, size, size, device=device)
        per_step = forward_flops(model, cfg, k, 1, size, device)
        bf16 = device.type == "cuda" and variant != "fp32-eager"
        with torch.no_grad(), torch.autocast(device.type, torch.bfloat16, enabled=bf16):
            model.sample(x, steps=1, samples=k)  # warm-up
            _sync(device)
            t0 = time.perf_counter()
            res = model.sample(x, steps=run_steps, samples=k, generator=None, clip=s.clip)
            _sync(device)
        secs = time.perf_counter() - t0
        calls = getattr(res, "network_calls", 1) + (steps - run_steps)
        out |= {"steps": steps, "samples": k, "calls": calls, "sample_s": secs * steps / run_steps,
                "extrapolated": run_steps < steps, "flop_per_s": per_step * run_steps / secs}
    out["peak_mb"] = _peak_mb(device)
    return out


def run_child(preset: str, size: int, phase: str, device: str, measured_steps: int,
              variant: str = "default", steps_k: tuple[int, int] | None = None,
              timeout: float | None = None) -> dict | None:
    sk = f"{steps_k[0]}x{steps_k[1]}" if steps_k else "preset"
    cmd = [sys.executable, __file__, "--child", preset, str(size), phase, device, str(measured_steps),
           variant, sk]
    limit = int(MEMORY_LIMIT_GB * 2**30)

    def cap_memory() -> None:  # a measurement that needs more fails alone, cleanly
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              preexec_fn=cap_memory if device == "cpu" else None)
    except subprocess.TimeoutExpired:
        print(f"{preset} {size}² {phase}: over {timeout:.0f} s, stopped", flush=True)
        return {"preset": preset, "size": size, "phase": phase, "variant": variant,
                "failed": f"stopped after {timeout:.0f} s (--child-timeout)"}
    if proc.returncode:
        print(f"{preset} {size}² {phase}: failed\n{proc.stderr[-2000:]}", flush=True)
        return {"preset": preset, "size": size, "phase": phase, "variant": variant,
                "failed": proc.stderr.strip()[-200:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        preset, size, phase, device, measured, variant, sk = sys.argv[2:9]
        steps_k = None if sk == "preset" else tuple(map(int, sk.split("x")))
        print(json.dumps(measure(preset, int(size), phase, device, int(measured), variant, steps_k)))
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="the demo presets at 64² only")
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 256])
    ap.add_argument("--presets", nargs="+", default=["demo", "demo-regression", "paper"])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--paper-steps", type=int, default=1,
                    help="denoiser steps timed for presets too slow to sample fully here")
    ap.add_argument("--variants", nargs="+", choices=list(VARIANTS),
                    help="training variants (default: fp32-eager and fast on a GPU, default on a CPU)")
    ap.add_argument("--sample-steps", type=int, help="sampling steps (default: the preset's)")
    ap.add_argument("--samples", type=int, help="posterior samples K (default: the preset's)")
    ap.add_argument("--phases", nargs="+", choices=["train", "sample"], default=["train", "sample"],
                    help="what to time (default: both)")
    ap.add_argument("--child-timeout", type=float, help="stop a measurement after this many seconds")
    ap.add_argument("--section", help="the docs/benchmarks.md section to write (default: speed, "
                    "or speed_gpu on a GPU); another name keeps those tables")
    args = ap.parse_args()
    if args.quick:
        args.sizes, args.presets = [64], ["demo", "demo-regression"]
    gpu = args.device == "cuda"
    variants = args.variants or (["fp32-eager", "fast"] if gpu else ["default"])
    rows = []
    for preset in args.presets:
        for size in args.sizes:
            cfg = load_config(preset)
            steps_k = (args.sample_steps or cfg.sample.steps, args.samples or cfg.sample.samples)
            slow = preset == "paper" and args.device == "cpu"
            measured = args.paper_steps if slow else steps_k[0]
            for variant in variants:
                pair = {}
                for phase in args.phases:
                    print(f"{preset} {size}² {phase} {variant} ...", flush=True)
                    pair[phase] = run_child(preset, size, phase, args.device, measured, variant, steps_k,
                                            args.child_timeout)
                    print(pair[phase], flush=True)
                rows.append((pair.get("train"), pair.get("sample")))
    peak = gpu_peak() if gpu else None
    flags = " --quick" if args.quick else ""
    if not args.quick:
        flags += f" --sizes {' '.join(map(str, args.sizes))} --presets {' '.join(args.presets)}"
    if args.variants:
        flags += f" --variants {' '.join(args.variants)}"
    if args.phases != ["train", "sample"]:
        flags += f" --phases {' '.join(args.phases)}"
    flags += f" --section {args.section}" if args.section else ""
    flags += f" --child-timeout {args.child_timeout:g}" if args.child_timeout else ""
    flags += f" --sample-steps {args.sample_steps}" if args.sample_steps else ""
    flags += f" --samples {args.samples}" if args.samples else ""
    lines = [
        f"## Speed and memory ({'GPU' if gpu else 'CPU'})", "",
        f"Command: `.venv/bin/python benchmarks/speed.py{flags}`  ",
        f"Machine: {machine()}  ", f"Date: {today()}", "",
        "Training: one optimiser step (the full loss: denoiser, schedule and its derivatives; "
        "the regression preset: its MSE) at the preset's batch size on random data. Sampling: "
        "one input image, the preset's steps × K posterior samples drawn as one batch; network "
        "calls per image = denoiser steps (each covering all K samples) + 1 schedule U-Net call "
        "(the authors' sampler calls both networks at every step: about 2 × steps). Peak "
        f"memory: {GPU_MEMORY if gpu else CPU_MEMORY}. TFLOP/s: the networks' forward FLOPs "
        "(torch.utils.flop_counter; training ×3 for the backward pass, leaving out the schedule's "
        "derivative passes, so an underestimate) per second"
        + (", and the share of this GPU's dense bf16 peak." if gpu else ".")
        + (" Variants: `fp32-eager` = float32, contiguous, not compiled; `fast` = bf16 autocast, "
           "channels-last, fused Adam, compiled denoiser." if gpu else ""),
        "",
        "| preset | variant | params [M] | size | batch | train step [s] | train images/s "
        "| train TFLOP/s | peak train [MB] | steps × K | network calls / image | sampling [s / image] "
        "| sampling TFLOP/s | peak sampling [MB] |",
        "|---" * 14 + "|",
    ]

    def tflops(row: dict) -> str:
        text = f"{row['flop_per_s'] / 1e12:.3f}"
        return text + (f" ({row['flop_per_s'] / peak:.0%} of peak)" if peak else "")

    def failure(row: dict | None) -> str | None:
        return None if row is None or "failed" not in row else (row["failed"].splitlines() or [""])[-1][:120]

    cap = f"; each CPU measurement is capped at {MEMORY_LIMIT_GB} GB" if not gpu else ""
    for tr, sa in rows:  # a phase not timed or failed blanks only its own cells
        first = next((r for r in (tr, sa) if r and "params_m" in r), tr or sa)
        train = sample = " | | | | "
        if failure(tr):
            train = f" | failed: {failure(tr)}{cap} | | | "
        elif tr:
            train = (f"{tr['batch']} | {tr['step_s']:.3g} | {tr['images_per_s']:.3g} | {tflops(tr)} | "
                     f"{tr['peak_mb']:.0f}")
        if failure(sa):
            sample = f" | | failed: {failure(sa)}{cap} | | "
        elif sa:
            sample = (f"{sa['steps']} × {sa['samples']} | {sa['calls']} | "
                      f"{sa['sample_s']:.3g}{' (extrapolated)' if sa['extrapolated'] else ''} | "
                      f"{tflops(sa)} | {sa['peak_mb']:.0f}")
        params = f"{first['params_m']:.1f}" if "params_m" in first else ""
        lines.append(f"| {first['preset']} | {first['variant']} | {params} | {first['size']}² | "
                     f"{train} | {sample} |")
    if any(sa and sa.get("extrapolated") for _, sa in rows):
        lines += ["", f"Extrapolated rows: {args.paper_steps} denoiser step(s) of all K samples timed "
                  "and scaled linearly to the preset's steps."]
    write_section(args.section or ("speed_gpu" if gpu else "speed"), "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
