"""The variance head (``model.zmd.variance_net``, issue 18/20): a one-pass std σ(x).

Toy problem with a known, input-dependent posterior: x uniform per pixel and
y = x + 0.3 (x − 0.5) + s(x)·n with s(x) = 0.02 + 0.2 x and n ~ N(0, 1), so the residual
around E[y | x] has std s(x), from 0.02 to 0.22. The head, trained with the Gaussian
likelihood, must recover s(x) in target units; its loss must be the closed form; its
gradient must reach no other network, so a model trained with it has bit-identical other
weights; and ``sample(uncertainty="head")`` and the predictor must give it as the std.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import fit, tiny_model_config

import microdiff
from microdiff.checkpoint import save_bundle
from microdiff.config import SampleConfig, TrainConfig, config_from_dict
from microdiff.diffusion import residual_base
from microdiff.errors import ConfigError
from microdiff.models import build_model
from microdiff.nets.unet import UNetSpec

HEAD = UNetSpec(8, [1], 1)


def _spread(x: torch.Tensor) -> torch.Tensor:
    return 0.02 + 0.2 * x


def _toy(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 8, 8, generator=gen)
    return x, x + 0.3 * (x - 0.5) + _spread(x) * torch.randn(n, 1, 8, 8, generator=gen)


def _config(head: bool = True):
    cfg = tiny_model_config("fixed-cosine", residual=True, target_scale=0.2, zmd=True)
    cfg.denoiser, cfg.zmd.net, cfg.zmd.scaled = UNetSpec(8, [1], 1), UNetSpec(8, [1], 1), True
    cfg.zmd.variance_net = HEAD if head else None
    return cfg


def _trained(steps: int, head: bool = True):
    torch.manual_seed(0)
    x, y = _toy(512, 0)
    trainer, _ = fit(build_model(_config(head)), x, y,
                     TrainConfig(steps=steps, batch_size=16, lr=3e-3, warmup=10, ema=0.0,
                                 grad_clip_scope="per-module"))
    return trainer.model


def test_variance_term_is_the_gaussian_negative_log_likelihood() -> None:
    torch.manual_seed(1)
    model = build_model(_config())
    for p in model.var_net.parameters():  # a head that is not the zero-initialised constant
        torch.nn.init.normal_(p, std=0.1)
    x, y = _toy(3, 2)
    terms = model.loss(x, y, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        mu = 0.2 * model.mean_net(x)  # zmd.scaled: μ = target_scale · net(x)
        s = model.var_net(torch.cat([x, mu / 0.2], dim=1))
        r = (y - residual_base(x, 1) - mu) / 0.2
        expected = (0.5 * s + 0.5 * r**2 / torch.exp(s)).flatten(1).mean(1)
    torch.testing.assert_close(terms["variance"], expected)
    without = model.total_loss({k: v for k, v in terms.items() if k != "variance"})
    torch.testing.assert_close(model.total_loss(terms), without + terms["variance"].mean())  # weight 1
    std = model.predict_std(x)
    torch.testing.assert_close(std, 0.2 * torch.exp(0.5 * s))


def test_the_head_trains_nothing_else() -> None:
    """Its gradient reaches only its own weights, and it is built last: with per-module
    clipping the mean net, denoiser and schedule after training are bit-identical."""
    torch.manual_seed(0)
    model = build_model(_config())
    x, y = _toy(2, 3)
    terms = model.loss(x, y, generator=torch.Generator().manual_seed(0))
    terms["variance"].mean().backward()
    head = {id(p) for p in model.var_net.parameters()}
    others = [p for p in model.parameters() if id(p) not in head]
    assert all(p.grad is None or not p.grad.any() for p in others)
    assert any(p.grad is not None and p.grad.any() for p in model.var_net.parameters())
    with_head, without = _trained(5), _trained(5, head=False)
    own = without.state_dict()
    for key, value in with_head.state_dict().items():
        if not key.startswith("var_net."):
            assert torch.equal(value, own[key]), key
    assert set(own) == {k for k in with_head.state_dict() if not k.startswith("var_net.")}


def test_head_std_recovers_an_input_dependent_spread() -> None:
    model = _trained(400)
    x, _ = _toy(16, 1)
    with torch.no_grad():
        std = model.predict_std(x)
    truth = _spread(x)
    bins = torch.bucketize(x, torch.tensor([0.25, 0.5, 0.75]))
    ratios = [float(std[bins == b].mean() / truth[bins == b].mean()) for b in range(4)]
    assert all(0.75 < r < 1.33 for r in ratios), ratios
    # it follows s(x) across a 4.3x range (0.045 → 0.195 between the outer bins' centres)
    assert float(std[bins == 3].mean() / std[bins == 0].mean()) > 3.0


def test_sample_and_predictor_give_the_head_as_the_std(tmp_path) -> None:
    model = _trained(20)
    x, _ = _toy(2, 4)
    with torch.no_grad():
        gen = torch.Generator().manual_seed(0)
        head = model.sample(x, steps=2, samples=2, generator=gen, point_estimate="mean-net",
                            uncertainty="head")
        drawn = model.sample(x, steps=2, samples=2, generator=torch.Generator().manual_seed(0),
                             point_estimate="mean-net")
        torch.testing.assert_close(head.std, model.predict_std(x))
    assert head.network_calls == drawn.network_calls + 1
    torch.testing.assert_close(head.samples, drawn.samples)  # the samples are still drawn
    sample = SampleConfig(steps=2, samples=2, point_estimate="mean-net", uncertainty="head")
    pred = microdiff.load(save_bundle(tmp_path / "model", model, _config(), sample, scale=2))
    image = np.random.default_rng(0).uniform(100, 900, (12, 10)).astype(np.float32)
    a, b = pred.predict(image, seed=1), pred.predict(image, seed=2)
    np.testing.assert_array_equal(a.std, b.std)  # no sampling noise in the std
    xn, norm = pred.condition(image)
    with torch.no_grad():
        sigma = model.predict_std(xn[None])[0].numpy()
    np.testing.assert_allclose(a.std, norm.denormalize_spread(sigma, channel_axis=0)[0], rtol=1e-5, atol=1e-4)


def test_head_without_its_network_is_refused() -> None:
    with pytest.raises(ConfigError, match="variance head"):
        config_from_dict({"model": {"zmd": {"enabled": True}}, "sample": {"uncertainty": "head"}})
    with pytest.raises(ValueError, match="variance head"):
        build_model(_config(head=False)).sample(torch.rand(1, 1, 8, 8), steps=1, uncertainty="head")


def test_a_run_with_the_head_calibrates_its_std_with_one_sample(tmp_path) -> None:
    """The head's std needs no spread of samples: training with K = 1 still ends with a
    calibration in the bundle, and predict applies it to the head's σ."""
    from helpers import tiny_config

    from microdiff.checkpoint import read_bundle
    from microdiff.runs import train_run

    cfg = tiny_config(steps=2)
    cfg.model.zmd.enabled, cfg.model.zmd.variance_net = True, HEAD
    cfg.sample.point_estimate, cfg.sample.uncertainty, cfg.sample.samples = "mean-net", "head", 1
    train_run(cfg, tmp_path / "run", progress=False)
    cal = read_bundle(tmp_path / "run" / "model").calibration
    assert cal is not None and cal.samples == 1
    pred = microdiff.load(tmp_path / "run" / "model")
    image = np.random.default_rng(0).uniform(100, 900, (16, 16)).astype(np.float32)
    out, raw = pred.predict(image, seed=0), pred.predict(image, seed=0, calibrated=False)
    _, norm = pred.condition(image)
    span = float(norm.denormalize_spread(np.ones(1, np.float32))[0])
    np.testing.assert_allclose(out.std, span * cal.std.apply(raw.std / span), rtol=1e-3)
    assert not np.allclose(out.std, raw.std, rtol=1e-2)  # the calibration did change it


def test_one_pass_prediction_equals_the_sampled_one_without_samples(tmp_path) -> None:
    """samples=0: μ(x) and the head's σ(x) with no sampling loop: the same mean and std as
    with K samples (neither depends on them), no samples; refused where it cannot apply."""
    model = _trained(20)
    x, _ = _toy(2, 4)
    with torch.no_grad():
        one = model.sample(x, steps=3, samples=0, point_estimate="mean-net", uncertainty="head")
        drawn = model.sample(x, steps=3, samples=2, generator=torch.Generator().manual_seed(0),
                             point_estimate="mean-net", uncertainty="head")
    torch.testing.assert_close(one.mean, drawn.mean)
    torch.testing.assert_close(one.std, drawn.std)
    assert one.samples.shape == (2, 0, 1, 8, 8) and one.network_calls == 2  # fixed schedule: no net
    with pytest.raises(ValueError, match="samples=0"):
        model.sample(x, steps=3, samples=0, point_estimate="mean-net")
    sample = SampleConfig(steps=3, samples=2, point_estimate="mean-net", uncertainty="head")
    pred = microdiff.load(save_bundle(tmp_path / "model", model, _config(), sample, scale=2))
    image = np.random.default_rng(0).uniform(100, 900, (12, 10)).astype(np.float32)
    calls = []
    a = pred.predict(image, samples=0, progress=lambda done, total: calls.append((done, total)))
    b = pred.predict(image, samples=2)
    np.testing.assert_allclose(a.mean, b.mean, rtol=1e-6)
    np.testing.assert_allclose(a.std, b.std, rtol=1e-6)
    assert calls == [(1, 1)]
    with pytest.raises(microdiff.errors.UserError, match="no samples to save"):
        pred.predict(image, samples=0, return_samples=True)
    plain = SampleConfig(steps=3, samples=2, point_estimate="mean-net")
    with pytest.raises(microdiff.errors.UserError, match="variance head"):
        plain_pred = microdiff.load(save_bundle(tmp_path / "plain", model, _config(), plain, scale=2))
        plain_pred.predict(image, samples=0)


def test_trainer_fits_the_head_to_the_ema_mean() -> None:
    """The head learns the error of the mean that predicts: the trainer's variance term is
    the closed form around the EMA model's μ(x) (kept near its initialisation here by ema ≈ 1,
    while the live μ moves), not around the live μ."""
    from microdiff.train import Trainer

    torch.manual_seed(0)
    trainer = Trainer(build_model(_config()), TrainConfig(lr=3e-3, warmup=0, ema=0.999999, ema_warmup=False,
                                                          grad_clip_scope="per-module"))
    x, y = _toy(4, 5)
    for _ in range(3):
        trainer.train_step(x, y, torch.Generator().manual_seed(0))
    model, ema = trainer.model, trainer.ema
    with torch.no_grad():
        ref = ema.predict_mean(x)
        assert not torch.allclose(ref, model.predict_mean(x))
        s = model.predict_log_var(x, ref)
        expected = float((0.5 * s + 0.5 * ((y - x - ref) / 0.2) ** 2 / torch.exp(s)).mean())
    record = trainer.train_step(x, y, torch.Generator().manual_seed(0))
    assert abs(record["variance"] - expected) < 1e-5 * max(1.0, abs(expected))


def test_a_pixel_norm_head_survives_the_bundle(tmp_path) -> None:
    """``norm: pixel`` is stored with the head's spec: the loaded model has PixelNorm layers
    and gives the same σ as the saved one (a bundle read as GroupNorm would load the same
    weight names silently and give another σ)."""
    from microdiff.nets.unet import PixelNorm

    cfg = _config()
    cfg.zmd.variance_net = UNetSpec(8, [1, 2], 1, norm="pixel")
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    with torch.no_grad():
        for p in model.var_net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    sample = SampleConfig(steps=2, samples=0, point_estimate="mean-net", uncertainty="head")
    pred = microdiff.load(save_bundle(tmp_path / "model", model, cfg, sample, scale=2))
    assert any(isinstance(m, PixelNorm) for m in pred.model.var_net.modules())
    x, _ = _toy(2, 5)
    with torch.no_grad():
        torch.testing.assert_close(pred.model.predict_std(x), model.predict_std(x))


def test_the_montage_names_what_the_model_gives() -> None:
    """A one-pass model's panels are μ(x) and σ(x), a sampled model's the posterior mean and std."""
    from microdiff.plots import MONTAGE_COLUMNS, montage_columns

    assert montage_columns() == MONTAGE_COLUMNS
    one_pass = montage_columns("mean-net", "head")
    assert one_pass[1:3] == ("mean network μ(x)", "variance head σ(x)")
    assert one_pass[0] == MONTAGE_COLUMNS[0] and one_pass[3:] == MONTAGE_COLUMNS[3:]
    assert montage_columns("mean-net", "samples")[1:3] == ("mean network μ(x)", "posterior std")


def test_calibrate_gives_a_head_model_a_per_image_interval_by_default(tmp_path) -> None:
    """With the head's std and ≥ 9 held-out images, calibration's units are whole images (the
    promise that held on every seed in docs/benchmarks.md); the samples' spread keeps tiles,
    and an explicit ``unit`` wins either way."""
    from microdiff.calibrate_files import calibrate_folder
    from microdiff.calibration import default_unit
    from microdiff.data.simulate_files import write_simulated_pairs

    assert default_unit("head") == "auto" and default_unit("samples") == "tile"
    data = tmp_path / "held"
    write_simulated_pairs(data, "mt", 9, 32, level=9, seed=5, progress=False)
    torch.manual_seed(0)
    model = build_model(_config())
    head = SampleConfig(steps=2, samples=0, point_estimate="mean-net", uncertainty="head")
    drawn = SampleConfig(steps=2, samples=2, point_estimate="mean-net")
    head_dir = save_bundle(tmp_path / "head", model, _config(), head, scale=2)
    drawn_dir = save_bundle(tmp_path / "drawn", model, _config(), drawn, scale=2)
    by_image = calibrate_folder(head_dir, data, tile=8, progress=False)
    assert by_image.unit == "image" and by_image.units == 9 and by_image.samples == 0
    assert calibrate_folder(head_dir, data, tile=8, progress=False, unit="tile").units == 9 * 16
    by_tile = calibrate_folder(drawn_dir, data, tile=8, progress=False)
    assert by_tile.unit == "tile" and by_tile.units == 9 * 16
