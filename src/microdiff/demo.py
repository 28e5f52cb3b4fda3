"""``microdiff demo``: train a small CVDM on built-in filament pairs, then compare its
posterior mean with the bicubic-upsampled input on held-out pairs (PSNR, SSIM)."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import numpy as np
import tifffile
import torch

from . import metrics
from .checkpoint import save_bundle
from .config import Config, config_to_yaml, load_config
from .data.io import atomic_write_bytes
from .data.synthetic import make_filament_pairs
from .diffusion import CVDM
from .errors import UserError
from .train import random_batches, train

TEST_SEED_OFFSET = 10_000  # held-out pairs come from a disjoint seed


def evaluate_pairs(
    model: CVDM, x: torch.Tensor, y: torch.Tensor, cfg: Config, seed: int, progress: bool = False
) -> tuple[dict[str, float], torch.Tensor, torch.Tensor]:
    """Posterior mean/std of every pair and mean PSNR/SSIM of it and of the bicubic input."""
    gen = torch.Generator().manual_seed(seed)
    s = cfg.sample
    out = model.sample(x, steps=s.steps, samples=s.samples, generator=gen,
                       sampler=s.sampler, eta=s.eta, grid=s.grid, clip=s.clip, progress=progress)
    rows = {"psnr_mean": [], "ssim_mean": [], "psnr_bicubic": [], "ssim_bicubic": []}
    for i in range(x.shape[0]):
        target = y[i, 0].numpy()
        for name, img in (("mean", out.mean[i, 0].numpy()), ("bicubic", x[i, 0].numpy())):
            rows[f"psnr_{name}"].append(metrics.psnr(img, target))
            rows[f"ssim_{name}"].append(metrics.ssim(img, target))
    summary = {k: float(np.mean(v)) for k, v in rows.items()}
    return summary, out.mean, out.std


def run_demo(out: Path, cfg: Config | None = None, progress: bool = True) -> dict[str, float]:
    """Run the demo into ``out`` and return its figures (also written to ``results.json``)."""
    cfg = cfg or load_config("demo")
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} exists and is not a folder; choose another --out")
    if out.exists() and any(out.iterdir()) and not (out / "results.json").exists():
        raise UserError(f"{out} exists and does not hold an earlier demo run; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.train.seed)
    d = cfg.data
    t0 = time.perf_counter()
    train_set = make_filament_pairs(d.n_train, d.size, d.scale, d.photons, seed=cfg.train.seed)
    test_set = make_filament_pairs(d.n_test, d.size, d.scale, d.photons,
                                   seed=cfg.train.seed + TEST_SEED_OFFSET)
    model = CVDM.from_config(cfg.model)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"demo: {d.n_train} training pairs of {d.size}x{d.size} (x{d.scale}), "
          f"{n_params / 1e6:.2f} M parameters, schedule {cfg.model.schedule.kind}, "
          f"{cfg.train.steps} steps")
    gen = torch.Generator().manual_seed(cfg.train.seed)
    result = train(model, random_batches(train_set.x, train_set.y, cfg.train.batch_size, gen),
                   cfg.train, progress=progress)
    t_train = time.perf_counter() - t0
    print(f"sampling {d.n_test} held-out inputs: {cfg.sample.samples} samples x "
          f"{cfg.sample.steps} steps ({cfg.sample.sampler})")
    summary, mean, std = evaluate_pairs(result.ema, test_set.x, test_set.y, cfg, cfg.train.seed,
                                        progress=progress)
    summary |= {"train_seconds": t_train, "total_seconds": time.perf_counter() - t0,
                "final_loss": result.history[-1]["loss"], "parameters": n_params}

    atomic_write_bytes(out / "config.yaml", config_to_yaml(cfg).encode(), overwrite=True)
    save_bundle(out / "model", result.ema, cfg.model, cfg.sample, scale=d.scale, overwrite=True)
    stack = torch.stack([test_set.x, mean, std, test_set.y], dim=1)[:, :, 0].numpy()
    buf = io.BytesIO()
    tifffile.imwrite(buf, stack.astype(np.float32), imagej=True, metadata={"axes": "TCYX"})
    atomic_write_bytes(out / "examples.tif", buf.getvalue(), overwrite=True)
    atomic_write_bytes(out / "results.json", json.dumps(summary, indent=2).encode(), overwrite=True)

    print()
    print(f"{'held-out pairs (n=' + str(d.n_test) + ')':<28}{'PSNR [dB]':>10}{'SSIM':>8}")
    print(f"{'bicubic-upsampled input':<28}{summary['psnr_bicubic']:>10.2f}{summary['ssim_bicubic']:>8.3f}")
    print(f"{'CVDM posterior mean':<28}{summary['psnr_mean']:>10.2f}{summary['ssim_mean']:>8.3f}")
    print(f"(affine intensity matching as in CARE; took {summary['total_seconds']:.0f} s; "
          f"outputs in {out})")
    return summary
