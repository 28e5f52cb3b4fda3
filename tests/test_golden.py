"""Golden numbers (diffusers style): a tiny fixed model, fixed inputs and seeds; the loss
terms, a sampled mean/std, a predictor output, three training steps and a regression
prediction pinned to values stored in ``golden.json``.

Any change of the numerics (a refactor that should change nothing, a new default) fails
here. When a change is *meant* to move these numbers, regenerate them and say so in the
commit: ``.venv/bin/python tests/test_golden.py --write``.
"""

from __future__ import annotations

import json
import sys
import zlib
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from helpers import tiny_model_config  # noqa: E402

import microdiff  # noqa: E402
from microdiff.checkpoint import save_bundle  # noqa: E402
from microdiff.config import SampleConfig, TrainConfig  # noqa: E402
from microdiff.regression import RegressionModel  # noqa: E402
from microdiff.train import Trainer  # noqa: E402

GOLDEN = Path(__file__).with_name("golden.json")
# float32 kernels differ between CPUs: the learned schedule's terms moved by up to 7e-5 (relative)
# between two x86 machines with the same torch; a real change of the numerics moves them far more
RTOL, ATOL = 2e-4, 1e-7


def _perturb(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Seeded noise on every weight (drawn per parameter name, so the order in which modules
    are declared does not matter), so no output is the zero of a fresh initialisation."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            gen = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(name.encode()))
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    return model


def _cvdm(kind: str = "learned-exact", zmd: bool = False):
    cfg = tiny_model_config(kind, residual=True, target_scale=0.1, zmd=zmd)
    torch.manual_seed(0)
    return _perturb(microdiff.CVDM.from_config(cfg), 1).eval(), cfg


def _xy(b: int = 2, size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(2)
    x = torch.rand(b, 1, size, size, generator=gen)
    return x, (x + 0.1 * torch.randn(b, 1, size, size, generator=gen)).clamp(0, 1)


def _stats(t: torch.Tensor | np.ndarray) -> list[float]:
    """Sum, sum of squares and three fixed entries: enough to see any change."""
    a = np.asarray(t, dtype=np.float64).ravel()
    return [float(a.sum()), float((a * a).sum()), float(a[0]), float(a[a.size // 3]), float(a[-1])]


def compute() -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    x, y = _xy()
    for kind, zmd in (("learned-exact", False), ("learned", False), ("fixed-cosine", True)):
        model, _ = _cvdm(kind, zmd)
        noise = model.draw_noise(y.shape, "cpu", torch.Generator().manual_seed(5))
        terms = model.loss(x, y, noise=noise)
        for name, v in terms.items():
            out[f"loss/{kind}/{name}"] = [float(e) for e in v.detach()]
        out[f"loss/{kind}/total"] = [float(model.total_loss(terms).detach())]
        res = model.sample(x, steps=4, samples=3, generator=torch.Generator().manual_seed(6), clip=1.2)
        out[f"sample/{kind}/mean"] = _stats(res.mean)
        out[f"sample/{kind}/std"] = _stats(res.std)
        out[f"sample/{kind}/gamma_half"] = _stats(res.gamma_half)

    model, cfg = _cvdm()
    tc = TrainConfig(steps=3, batch_size=2, lr=1e-3, warmup=2, ema=0.9, seed=0)
    torch.manual_seed(0)
    trainer = Trainer(model.train(), tc)
    gen = torch.Generator().manual_seed(7)
    out["train/losses"] = [trainer.train_step(x, y, gen)["loss"] for _ in range(3)]
    out["train/ema"] = _stats(torch.cat([p.flatten() for p in trainer.ema.parameters()]).detach())

    torch.manual_seed(0)
    reg = _perturb(RegressionModel.from_config(tiny_model_config("learned", residual=True,
                                                                 target_scale=0.1)), 3).eval()
    out["regression/loss"] = [float(v) for v in reg.loss(x, y)["mse"].detach()]
    out["regression/prediction"] = _stats(reg(x).detach())
    return out


def compute_predictor(tmp: Path) -> dict[str, list[float]]:
    model, cfg = _cvdm()
    folder = save_bundle(tmp / "model", model, cfg, SampleConfig(steps=3, samples=2, clip=1.2), scale=2,
                         pixel_size_um=0.1)
    image = np.random.default_rng(8).uniform(100, 1000, (20, 20)).astype(np.float32)
    res = microdiff.load(folder).predict(image, seed=3, tile=16, overlap=4, return_samples=True,
                                          pixel_size_um=0.2)
    return {"predict/mean": _stats(res.mean), "predict/std": _stats(res.std),
            "predict/samples": _stats(res.samples), "predict/pixel_size": [res.pixel_size_um]}


def _compare(got: dict[str, list[float]], golden: dict[str, list[float]]) -> None:
    for key, value in got.items():
        assert key in golden, f"{key} has no golden value: regenerate golden.json"
        np.testing.assert_allclose(value, golden[key], rtol=RTOL, atol=ATOL, err_msg=key)


def test_golden_numbers(tmp_path) -> None:
    golden = json.loads(GOLDEN.read_text())
    got = compute() | compute_predictor(tmp_path)
    assert set(got) == set(golden)
    _compare(got, golden)


if __name__ == "__main__" and "--write" in sys.argv:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        values = compute() | compute_predictor(Path(tmp))
    GOLDEN.write_text(json.dumps(values, indent=1) + "\n")
    print(f"wrote {len(values)} golden entries to {GOLDEN}")
