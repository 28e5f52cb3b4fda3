"""Prediction time of each output mode (issue 20): regression, one pass, few-step and 20-step
sampling, per 1024² image and per Z stack of 1024² planes, side by side.

Modes, all through ``Predictor.predict`` (the path ``microdiff predict`` takes: normalisation,
256² tiles with 32-pixel overlap, inverse units; stacks through ``predict_planes``, plane by
plane):

- ``regression``: the ``demo-regression`` preset's one answer;
- ``one-pass``: the ``demo`` preset with the variance head, ``samples=0``: μ(x) and σ(x);
- ``few-step``: the ``demo`` preset, K samples of ``--few`` steps (default 4 × K = 8);
- ``sampled``: the ``demo`` preset, K samples of ``--sampled`` steps (default 20 × K = 8; the
  preset itself draws K = 4, half of this).

Timing does not depend on the weights, so the models are freshly initialised (seed 0); the
input is random, ``--size``² pixels (output 2×). Regression and one pass are timed on the whole
image and on a real ``--planes``-plane stack. The sampled modes cost minutes per tile on a
CPU: one tile (128² input, one 256² output tile) is timed and multiplied by the number of
tiles of the image, and the image by the planes (the table says "extrapolated"; the regression
and one-pass rows give both figures, which checks the scaling); on a GPU only the 20-step
stack is extrapolated. Median of ``--repeats`` runs after a warm-up. On a GPU
(``--device cuda``) the networks run in bf16 (``--no-bf16``: float32, as ``predict --no-bf16``)
and ``--tile-batch`` tiles go through together. Writes the ``prediction_modes`` section of
docs/benchmarks.md (on a GPU ``prediction_modes_gpu``, or ``prediction_modes_gpu_fp32`` with
``--no-bf16``). Quality of each mode: the sections the table names. Usage::

    .venv/bin/python benchmarks/prediction_modes.py [--size 512] [--planes 50] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _protocol as P  # noqa: E402
from _report import machine, today, write_section  # noqa: E402

import microdiff  # noqa: E402
from microdiff import load_config  # noqa: E402
from microdiff.checkpoint import save_bundle  # noqa: E402
from microdiff.config import apply_overrides  # noqa: E402
from microdiff.data.tiling import tile_starts  # noqa: E402
from microdiff.models import build_model  # noqa: E402
from microdiff.predictor import predict_planes  # noqa: E402

TILE, OVERLAP = 256, 32


def bundle(folder: Path, preset: str, overrides: list[str], device: str,
           bf16: bool = True) -> microdiff.Predictor:
    """A freshly initialised model of ``preset`` as a loaded bundle."""
    cfg = apply_overrides(load_config(preset), overrides)
    torch.manual_seed(0)
    model = build_model(cfg.model).eval()
    save_bundle(folder, model, cfg.model, cfg.sample, scale=cfg.data.scale)
    return microdiff.load(folder, device, bf16=bf16)


def median_seconds(run, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def parse(text: str) -> tuple[int, int]:
    steps, k = text.split(":")
    return int(steps), int(k)


def measure(args, tile_batch: int) -> dict[str, dict]:
    """Seconds per tile, image and stack of each mode (see module), as rows by mode name."""
    gpu = args.device == "cuda"
    rng = np.random.default_rng(0)
    image = rng.uniform(100, 900, (args.size, args.size)).astype(np.float32)
    one_tile = image[: TILE // 2, : TILE // 2]
    few, sampled = parse(args.few), parse(args.sampled)
    modes = {"regression": ("demo-regression", [], {}),
             "one-pass": ("demo", [], {"samples": 0}),  # the demo preset's default
             "few-step": ("demo", P.SAMPLED_DEMO, {"steps": few[0], "samples": few[1]}),
             "sampled": ("demo", P.SAMPLED_DEMO, {"steps": sampled[0], "samples": sampled[1]})}
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (preset, overrides, kw) in modes.items():
            pred = bundle(Path(tmp) / name, preset, overrides, args.device, args.bf16)
            kw = kw | {"tile": TILE, "overlap": OVERLAP, "tile_batch": tile_batch, "seed": 0}
            pred.predict(one_tile, **kw)  # warm-up
            tile_s = median_seconds(lambda p=pred, k=kw: p.predict(one_tile, **k), args.repeats)
            row = {"tile_s": tile_s, "calls": 1 if name == "regression" else kw.get("steps", 1)}
            if name in ("regression", "one-pass") or gpu:
                row["image_s"] = median_seconds(lambda p=pred, k=kw: p.predict(image, **k), args.repeats)
            if name in ("regression", "one-pass") or (gpu and name != "sampled"):
                stack = np.repeat(image[None], args.planes, axis=0)
                t0 = time.perf_counter()
                predict_planes(pred, stack, **kw)
                row["stack_s"] = time.perf_counter() - t0
            rows[name] = row
            print(name, row, flush=True)
    return rows


def report(args, tile_batch: int, rows: dict[str, dict]) -> None:
    """Write the table of ``rows`` to docs/benchmarks.md and print it."""
    gpu = args.device == "cuda"
    precision = ("bf16" if args.bf16 else "float32") if gpu else ""
    few, sampled = parse(args.few), parse(args.sampled)
    n_tiles = len(tile_starts(2 * args.size, TILE, OVERLAP)) ** 2
    out = 2 * args.size
    reg = rows["regression"].get("image_s") or rows["regression"]["tile_s"] * n_tiles

    def cell(row: dict, key: str, planes: int) -> str:
        if key in row:
            return f"{row[key]:.1f}"
        return f"{row.get('image_s', row['tile_s'] * n_tiles) * planes:.0f} (extrapolated)"

    labels = {"regression": "regression U-Net (`demo-regression`)",
              "one-pass": "one pass: μ(x) + the variance head's σ(x) (`--samples 0`)",
              "few-step": f"few-step sampling: {few[0]} steps × K = {few[1]} (`--steps {few[0]} "
                          f"--samples {few[1]}`)",
              "sampled": f"sampling: {sampled[0]} steps × K = {sampled[1]} (`--steps {sampled[0]} "
                         f"--samples {sampled[1]}`)"}
    quality = {"regression": "*long sizing*", "one-pass": "*calibration_head*",
               "few-step": "*few_step*", "sampled": "*few_step*, *long sizing*"}
    cmd = (f".venv/bin/python benchmarks/prediction_modes.py --size {args.size} --planes {args.planes} "
           f"--repeats {args.repeats} --few {args.few} --sampled {args.sampled}"
           + (f" --device {args.device} --tile-batch {tile_batch}" if gpu else "")
           + ("" if args.bf16 else " --no-bf16"))
    lines = [f"## Prediction time per output mode ({f'GPU, {precision}' if gpu else 'CPU'}, issue 20)", "",
             f"Command: `{cmd}` ({today()}; {machine()}).", "",
             f"A random {args.size}² input ({out}² output, {n_tiles} tiles of {TILE}² with {OVERLAP}-pixel "
             f"overlap, {tile_batch} per call{', ' + precision if gpu else ''}) through `Predictor.predict`; "
             f"the stack: {args.planes} such planes through `predict_planes`. Freshly initialised "
             "weights (time does not depend on them); median of "
             f"{args.repeats} runs. *one tile*: a 128² input (one 256² output tile). Extrapolated: one "
             f"tile × {n_tiles}, the image × {args.planes} for the stack.", "",
             f"| mode | denoiser steps per sample | one tile [s] | {out}² image [s] | × regression "
             f"| {args.planes}-plane stack [s] | quality: section |", "|---" * 7 + "|"]
    for name, row in rows.items():
        image_s = row.get("image_s", row["tile_s"] * n_tiles)
        lines.append(f"| {labels[name]} | {row['calls'] if name not in ('regression', 'one-pass') else '–'} "
                     f"| {row['tile_s']:.2f} | {cell(row, 'image_s', 1)} | {image_s / reg:.1f} "
                     f"| {cell(row, 'stack_s', args.planes)} | {quality[name]} |")
    r, o = rows["regression"], rows["one-pass"]
    if "image_s" in r:
        lines += ["", f"Scaling check: one tile × {n_tiles} would predict {r['tile_s'] * n_tiles:.1f} s "
                  f"(regression) and {o['tile_s'] * n_tiles:.1f} s (one pass) against the measured "
                  f"{r['image_s']:.1f} s and {o['image_s']:.1f} s."]
    section = "prediction_modes" + ("_gpu" if gpu else "") + ("" if args.bf16 or not gpu else "_fp32")
    write_section(section, "\n".join(lines))
    print("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=512, help="input side in pixels (output: 2×)")
    ap.add_argument("--planes", type=int, default=50, help="planes of the timed stack")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--few", default="4:8", help="few-step sampler, STEPS:K")
    ap.add_argument("--sampled", default="20:8", help="today's sampler, STEPS:K")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--tile-batch", type=int, help="tiles per network call (default: 8 on a GPU, 1 on a CPU)")
    ap.add_argument("--no-bf16", dest="bf16", action="store_false", help="CUDA: float32 networks")
    args = ap.parse_args()
    tile_batch = args.tile_batch or (8 if args.device == "cuda" else 1)
    rows = measure(args, tile_batch)
    report(args, tile_batch, rows)

if __name__ == "__main__":
    main()
