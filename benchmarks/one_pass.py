"""Prediction time of the one-pass output (issue 20) against the regression U-Net, side by side.

The ``demo`` preset with the variance head (``model.zmd.variance_net``, the mean net's size)
predicts with ``samples=0``: μ(x) and the head's σ(x), no sampling loop; the
``demo-regression`` preset predicts its one answer. Both through ``Predictor.predict`` (the
path ``microdiff predict`` takes: normalisation, 256² tiles with 32-pixel overlap, inverse
units), on a random 512² input (1024² output, 2× super-resolution), ``--repeats`` times each,
interleaved, after one warm-up; the table gives the median. For scale, the demo's sampled
prediction (K × steps of the preset) on a 128² input. Timing does not depend on the weights,
so the models are freshly initialised (seed 0). Writes the ``one_pass`` section of
docs/benchmarks.md. Usage::

    .venv/bin/python benchmarks/one_pass.py [--size 512] [--repeats 3] [--threads 2]
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
from _report import machine, today, write_section  # noqa: E402

import microdiff  # noqa: E402
from microdiff import load_config  # noqa: E402
from microdiff.checkpoint import save_bundle  # noqa: E402
from microdiff.config import apply_overrides  # noqa: E402
from microdiff.models import build_model  # noqa: E402

HEAD = "model.zmd.variance_net={base_channels: 32, channel_mults: [1, 2, 2], num_res_blocks: 1}"


def bundle(folder: Path, preset: str, overrides: list[str]) -> microdiff.Predictor:
    """A freshly initialised model of ``preset`` as a loaded bundle."""
    cfg = apply_overrides(load_config(preset), overrides)
    torch.manual_seed(0)
    model = build_model(cfg.model).eval()
    return microdiff.load(save_bundle(folder, model, cfg.model, cfg.sample, scale=cfg.data.scale))


def seconds(pred: microdiff.Predictor, image: np.ndarray, **kwargs) -> float:
    t0 = time.perf_counter()
    pred.predict(image, seed=0, **kwargs)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=512, help="input side in pixels (output: 2×)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    image = rng.uniform(100, 900, (args.size, args.size)).astype(np.float32)
    small = image[:128, :128]
    with tempfile.TemporaryDirectory() as tmp:
        one = bundle(Path(tmp) / "one", "demo", [HEAD, "sample.uncertainty=head"])
        reg = bundle(Path(tmp) / "reg", "demo-regression", [])
        runs = {"regression": (reg, {}), "one-pass": (one, {"samples": 0})}
        for pred, kw in runs.values():  # warm-up
            pred.predict(small, **kw)
        times: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(args.repeats):
            for name, (pred, kw) in runs.items():
                times[name].append(seconds(pred, image, **kw))
                print(f"{name}: {times[name][-1]:.2f} s", flush=True)
        s = one.bundle.sample
        sampled = statistics.median(seconds(one, small) for _ in range(args.repeats))
        small_one = statistics.median(seconds(one, small, samples=0) for _ in range(args.repeats))
        small_reg = statistics.median(seconds(reg, small) for _ in range(args.repeats))
        params = {name: sum(p.numel() for p in pred.model.parameters()) for name, (pred, _) in runs.items()}
    med = {k: statistics.median(v) for k, v in times.items()}
    out = 2 * args.size
    lines = ["## One-pass prediction time (issue 20)", "",
             f"Command: `.venv/bin/python benchmarks/one_pass.py --size {args.size} --repeats {args.repeats} "
             f"--threads {args.threads}` ({today()}; {machine()}).", "",
             f"A random {args.size}² input, {out}² output (2× super-resolution), through `Predictor.predict` "
             "(256² tiles, 32-pixel overlap), freshly initialised weights (time does not depend on them); "
             f"median of {args.repeats} runs, interleaved.", "",
             "| prediction | network calls per tile | parameters | seconds per image | × regression |",
             "|---|---|---|---|---|",
             f"| regression U-Net (`demo-regression`) | 1 | {params['regression'] / 1e6:.2f} M "
             f"| {med['regression']:.2f} | 1.00 |",
             "| one pass: μ(x) + the variance head's σ(x) (`demo` + head, `--samples 0`) "
             f"| 2 + the schedule's | {params['one-pass'] / 1e6:.2f} M | {med['one-pass']:.2f} "
             f"| {med['one-pass'] / med['regression']:.2f} |", "",
             f"For scale, on a 128² input (256² output, one tile): regression {small_reg:.2f} s, one pass "
             f"{small_one:.2f} s, the demo's sampled prediction ({s.samples} samples × {s.steps} steps) "
             f"{sampled:.2f} s ({sampled / small_reg:.0f}× regression). The one-pass row's parameters "
             "include the denoiser, which it does not call."]
    write_section("one_pass", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
