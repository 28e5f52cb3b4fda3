"""The inference bundle and the Predictor: round trip, any size, units, determinism."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import conv_output_dtypes, tiny_model_config

import microdiff
from microdiff.checkpoint import BundleError, load_bundle, read_bundle, save_bundle
from microdiff.config import SampleConfig
from microdiff.diffusion import CVDM
from microdiff.errors import ShapeError, UserError
from microdiff.models import build_model


@pytest.fixture
def bundle(tmp_path):
    torch.manual_seed(0)
    cfg = tiny_model_config("learned", residual=True, target_scale=0.2)
    model = CVDM.from_config(cfg)
    with torch.no_grad():  # a denoiser that is not zero, so outputs depend on the weights
        model.denoiser.conv_out.weight.normal_(0, 0.05)
    sample = SampleConfig(steps=4, samples=3, clip=1.0)
    return save_bundle(tmp_path / "model", model, cfg, sample, scale=2, pixel_size_um=0.0626), model


def test_round_trip_gives_identical_samples(bundle) -> None:
    folder, model = bundle
    loaded, meta = load_bundle(folder)
    assert meta.scale == 2 and meta.microdiff_version == microdiff.__version__
    assert meta.sample == SampleConfig(steps=4, samples=3, clip=1.0) and meta.percentiles == (1.0, 99.8)
    x = torch.randn(1, 1, 16, 16)
    a = model.eval().sample(x, steps=4, samples=2, generator=torch.Generator().manual_seed(1))
    b = loaded.sample(x, steps=4, samples=2, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a.samples, b.samples)


def test_bundle_errors(bundle, tmp_path) -> None:
    folder, model = bundle
    with pytest.raises(BundleError, match="exists"):
        save_bundle(folder, model, tiny_model_config(), SampleConfig(), scale=2)
    with pytest.raises(BundleError, match="not a microdiff model folder"):
        load_bundle(tmp_path / "nothing")
    meta = json.loads((folder / "bundle.json").read_text())
    meta["model"]["denoiser"]["base_channels"] = 16
    (folder / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="do not match"):
        load_bundle(folder)
    del meta["scale"]
    (folder / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="not a valid model description"):
        load_bundle(folder)


def test_bundles_of_earlier_versions_still_load(bundle) -> None:
    """A ``sampler`` key (η was then two knobs) and the unread ``normalization.kind`` of
    earlier bundles: ancestral means η = 1 whatever ``eta`` said; ddim keeps ``eta``."""
    folder, _ = bundle
    meta = json.loads((folder / "bundle.json").read_text())
    meta["normalization"]["kind"] = "percentile"
    for sampler, eta, want in (("ancestral", 0.3, 1.0), ("ddim", 0.3, 0.3)):
        meta["sample"] |= {"sampler": sampler, "eta": eta}
        (folder / "bundle.json").write_text(json.dumps(meta))
        assert read_bundle(folder).sample.eta == want
    meta["sample"]["sampler"] = "euler"
    (folder / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="euler"):
        read_bundle(folder)
    meta["sample"]["sampler"], meta["format"] = "ddim", 1  # format 1: before point estimates
    (folder / "bundle.json").write_text(json.dumps(meta))
    assert read_bundle(folder).sample.point_estimate == "sample-mean"


@pytest.mark.parametrize(("change", "message"), [
    ({"scale": 2.5}, "scale must be a whole number"), ({"scale": 0}, "scale must be a whole number"),
    ({"format": 7}, "bundle format 7"),
    ({"sample": {"point_estimate": "mean-net"}}, "no mean network"),
    ({"sample": {"steps": 0}}, "sample: steps"),
])
def test_bad_bundle_descriptions_are_refused_in_one_sentence(bundle, change, message) -> None:
    folder, _ = bundle
    meta = json.loads((folder / "bundle.json").read_text())
    for key, value in change.items():
        if isinstance(value, dict):
            meta[key] |= value
        else:
            meta[key] = value
    (folder / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match=message):
        read_bundle(folder)


def test_predictor_takes_the_bundle_mapping_of_exported_packages(bundle) -> None:
    folder, model = bundle
    meta = json.loads((folder / "bundle.json").read_text())
    pred = microdiff.Predictor(model.eval(), meta)
    assert pred.bundle == read_bundle(folder) and pred.scale == 2


def test_predict_any_size_with_pixel_size_and_determinism(bundle) -> None:
    pred = microdiff.load(bundle[0])
    image = np.random.default_rng(0).gamma(2, 100, (37, 45)).astype(np.float32)
    a = pred.predict(image, seed=3, tile=32, overlap=8, pixel_size_um=0.0626)
    b = pred.predict(image, seed=3, tile=32, overlap=8, pixel_size_um=0.0626)
    assert a.mean.shape == a.std.shape == (74, 90)
    assert np.isfinite(a.mean).all() and (a.std >= 0).all() and a.std.max() > 0
    assert a.pixel_size_um == pytest.approx(0.0313)
    np.testing.assert_array_equal(a.mean, b.mean)


def test_outputs_follow_the_input_intensity_units(bundle) -> None:
    """Percentile normalisation makes the prediction equivariant to a·image + b."""
    pred = microdiff.load(bundle[0])
    image = np.random.default_rng(1).gamma(2, 100, (24, 24)).astype(np.float32)
    p1 = pred.predict(image, seed=0)
    p2 = pred.predict(3 * image + 500, seed=0)
    np.testing.assert_allclose(p2.mean, 3 * p1.mean + 500, rtol=1e-4, atol=1e-2)
    np.testing.assert_allclose(p2.std, 3 * p1.std, rtol=1e-4, atol=1e-3)


def test_predict_rejects_bad_axes(bundle) -> None:
    pred = microdiff.load(bundle[0])
    with pytest.raises(ShapeError, match="axes"):
        pred.predict(np.zeros((4, 8, 8)), axes="ZYX")
    with pytest.raises(ShapeError, match="channel"):
        pred.predict(np.zeros((2, 8, 8)), axes="CYX")


def test_predict_a_1500px_image_through_tiles_writes_the_halved_pixel_size(bundle, tmp_path) -> None:
    from microdiff.data.io import Image, read_image, write_image
    from microdiff.predict_files import predict_files

    image = np.random.default_rng(1).gamma(2, 100, (1500, 1500)).astype(np.float32)
    write_image(tmp_path / "in" / "big.tif", Image(image, "YX", 0.0626))
    written = predict_files(bundle[0], [tmp_path / "in"], tmp_path / "out", samples=1, steps=1,
                            tile=1024, overlap=32, progress=False)
    assert [p.name for p in written] == ["big_mean.tif", "big_std.tif"]
    mean = read_image(tmp_path / "out" / "big_mean.tif")
    assert mean.data.shape == (3000, 3000) and np.isfinite(mean.data).all()
    assert mean.pixel_size == pytest.approx(0.0313, rel=1e-5)


def test_predict_can_return_samples_and_the_schedule_map(bundle) -> None:
    pred = microdiff.load(bundle[0])
    image = np.random.default_rng(0).gamma(2, 100, (20, 24)).astype(np.float32)
    res = pred.predict(image, samples=3, steps=2, seed=0, return_samples=True, return_schedule=True)
    plain = pred.predict(image, samples=3, steps=2, seed=0)
    assert res.samples.shape == (3, 40, 48) and res.schedule.shape == (40, 48)
    np.testing.assert_allclose(res.samples.mean(0), res.mean, rtol=1e-4, atol=1e-3)
    np.testing.assert_array_equal(res.mean, plain.mean)  # asking for more changes nothing
    assert ((res.schedule > 0) & (res.schedule < 1)).all()  # γ(0.5, x) is a signal fraction


def _regression_bundle(tmp_path, sample: SampleConfig):
    """A small regression U-Net (GroupNorm; a non-zero output layer) saved with ``sample``."""
    cfg = tiny_model_config("learned", residual=True, target_scale=0.2)
    cfg.kind = "regression"
    torch.manual_seed(0)
    model = build_model(cfg)
    with torch.no_grad():
        model.net.conv_out.weight.normal_(0, 0.05)
    return save_bundle(tmp_path / "reg", model, cfg, sample, scale=2)


def test_batched_tiles_blend_exactly_like_single_tiles(bundle, tmp_path) -> None:
    """A deterministic (regression) model: batching tiles must not change the output; a
    diffusion model: still the same output for the same seed and tile batch."""
    folder = _regression_bundle(tmp_path, SampleConfig(steps=1, samples=1))
    image = np.random.default_rng(0).gamma(2, 100, (37, 45)).astype(np.float32)
    reg = microdiff.load(folder)
    one = reg.predict(image, tile=32, overlap=8, tile_batch=1).mean
    four = reg.predict(image, tile=32, overlap=8, tile_batch=4).mean
    np.testing.assert_allclose(four, one, rtol=1e-5, atol=1e-5 * float(np.abs(one).max()))
    pred = microdiff.load(bundle[0])
    a = pred.predict(image, seed=1, tile=32, overlap=8, tile_batch=3)
    b = pred.predict(image, seed=1, tile=32, overlap=8, tile_batch=3)
    np.testing.assert_array_equal(a.mean, b.mean)
    single = pred.predict(image, seed=1, tile=32, overlap=8, tile_batch=1)
    assert not np.array_equal(a.mean, single.mean)  # the tiles did go through together
    with pytest.raises(UserError, match="tile_batch"):
        pred.predict(image, tile_batch=0)


def test_the_bundles_tile_is_the_default_tiling_and_is_validated(tmp_path) -> None:
    """``sample.tile``/``sample.overlap`` (a config's choice, e.g. a model's training patches)
    set how predict tiles when no tile is given; an explicit tile still wins."""
    folder = _regression_bundle(tmp_path, SampleConfig(steps=1, samples=1, tile=32, overlap=8))
    pred = microdiff.load(folder)
    assert (pred.bundle.sample.tile, pred.bundle.sample.overlap) == (32, 8)
    assert pred.tiling() == (32, 8) and pred.tiling(64) == (64, 8) and pred.tiling(8) == (8, 2)
    image = np.random.default_rng(0).gamma(2, 100, (40, 48)).astype(np.float32)
    default = pred.predict(image).mean
    np.testing.assert_array_equal(default, pred.predict(image, tile=32, overlap=8).mean)
    whole = pred.predict(image, tile=256).mean  # GroupNorm: statistics of the whole image differ
    assert np.abs(whole - default).max() > 1e-4 * np.abs(default).max()
    with pytest.raises(ValueError, match="sample.overlap"):
        SampleConfig(tile=32, overlap=32)


@pytest.mark.parametrize("bf16", [True, False])
def test_bf16_switch_leaves_a_cpu_prediction_in_float32(bundle, bf16) -> None:
    """``bf16`` (``predict --bf16/--no-bf16``) acts on CUDA only: on a CPU the networks run in
    float32 either way and the outputs are identical (tests/test_cuda.py covers the GPU)."""
    folder, _ = bundle
    image = np.random.default_rng(0).random((12, 12)).astype(np.float32)
    predictor = microdiff.load(folder, "cpu", bf16=bf16)
    assert predictor.bf16 is bf16
    assert conv_output_dtypes(predictor, image) == {torch.float32}
    reference = microdiff.load(folder, "cpu", bf16=not bf16).predict(image, samples=2, steps=3)
    np.testing.assert_array_equal(predictor.predict(image, samples=2, steps=3).mean, reference.mean)


def test_predict_files_hands_the_bf16_switch_to_the_predictor(bundle, tmp_path, monkeypatch) -> None:
    """``predict --no-bf16`` reaches the :class:`Predictor` that predicts the files."""
    from microdiff import predict_files as pf
    from microdiff.data.io import Image, write_image

    folder, _ = bundle
    made = []
    monkeypatch.setattr(pf, "load", lambda *a, **k: made.append(microdiff.load(*a, **k)) or made[-1])
    write_image(tmp_path / "in" / "a.tif", Image(np.ones((12, 12), np.float32), "YX", None))
    pf.predict_files(folder, [tmp_path / "in"], tmp_path / "out", samples=1, steps=2, progress=False,
                     bf16=False)
    assert [p.bf16 for p in made] == [False]


def test_outputs_are_named_by_the_whole_stem_and_never_shared(bundle, tmp_path) -> None:
    """``cell_0.5um.tif`` and ``cell_0.7um.tif`` give two sets of outputs; two inputs that would
    write the same outputs (``a.tif`` in two folders) are refused before anything is written."""
    from microdiff.data.io import Image, write_image
    from microdiff.predict_files import predict_files

    folder, _ = bundle
    for name in ("in/cell_0.5um.tif", "in/cell_0.7um.tif", "one/a.tif", "two/a.tif"):
        write_image(tmp_path / name, Image(np.ones((12, 12), np.float32), "YX", None))
    written = predict_files(folder, [tmp_path / "in"], tmp_path / "out", samples=1, steps=2, progress=False)
    assert sorted(p.name for p in written) == ["cell_0.5um_mean.tif", "cell_0.5um_std.tif",
                                                "cell_0.7um_mean.tif", "cell_0.7um_std.tif"]
    again = predict_files(folder, [tmp_path / "in" / "cell_0.7um.tif", tmp_path / "in"], tmp_path / "out3",
                          samples=1, steps=2, progress=False)  # a file given and in its folder: once
    assert [p.name for p in again][:2] == ["cell_0.7um_mean.tif", "cell_0.7um_std.tif"] and len(again) == 4
    with pytest.raises(UserError, match="would both write a_mean.tif"):
        predict_files(folder, [tmp_path / "one", tmp_path / "two"], tmp_path / "out2", samples=1, steps=2,
                      progress=False)
    assert not (tmp_path / "out2").exists()


def test_a_stack_refuses_samples_rather_than_dropping_them(bundle) -> None:
    from microdiff.predictor import predict_planes

    folder, _ = bundle
    pred = microdiff.load(folder)
    planes = np.ones((2, 12, 12), np.float32)
    for ask in ("return_samples", "return_schedule"):
        with pytest.raises(UserError, match="plane by plane gives mean and std"):
            predict_planes(pred, planes, samples=1, steps=2, **{ask: True})
    assert predict_planes(pred, planes, samples=1, steps=2).mean.shape == (2, 24, 24)


def test_an_image_at_another_pixel_size_than_training_is_warned_about(tmp_path) -> None:
    """The bundle keeps the training input's pixel size; an image more than 10 % off it is
    predicted with a one-line warning that says by how much (the structures look 0.63× their
    training size at 100 nm against 62.6 nm), one within 10 % or of unknown size without."""
    import subprocess
    import sys
    import warnings

    from microdiff.data.io import Image, write_image

    torch.manual_seed(0)
    cfg = tiny_model_config("learned", residual=True, target_scale=0.2)
    folder = save_bundle(tmp_path / "model", CVDM.from_config(cfg), cfg, SampleConfig(steps=2, samples=1),
                         scale=2, pixel_size_um=0.0626)
    pred, image = microdiff.load(folder), np.ones((12, 12), np.float32)
    with pytest.warns(UserWarning, match=r"pixel size is 0.1 µm.*trained on 0.0626 µm.*0.63×"):
        pred.predict(image, pixel_size_um=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pred.predict(image, pixel_size_um=0.066)
        pred.predict(image)
    write_image(tmp_path / "in" / "a.tif", Image(image, "YX", 0.1))
    proc = subprocess.run([sys.executable, "-m", "microdiff.cli", "predict", str(folder),
                           str(tmp_path / "in"), "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "warning: the image's pixel size is 0.1 µm" in proc.stderr and "Traceback" not in proc.stderr
