"""Configuration: presets validate, unknown keys and bad values are rejected clearly."""

from __future__ import annotations

import pytest
import yaml

import microdiff
from microdiff.config import apply_overrides, config_from_dict, config_to_yaml, load_config, preset_names
from microdiff.errors import ConfigError


def test_every_preset_loads_and_builds(tmp_path) -> None:
    assert {"demo", "sim-mt", "sim-mixed", "biosr-sr", "paper"} <= set(preset_names())
    cfg = load_config("demo")
    model = microdiff.CVDM.from_config(cfg.model)
    assert model.residual and model.timesteps == 200


def test_yaml_round_trip(tmp_path) -> None:
    cfg = load_config("paper")
    path = tmp_path / "c.yaml"
    path.write_text(config_to_yaml(cfg))
    assert load_config(path) == cfg


def test_unknown_key_is_rejected_with_its_location() -> None:
    with pytest.raises(ConfigError, match=r"model\.schedule\.knd"):
        config_from_dict({"model": {"schedule": {"knd": "learned"}}})
    with pytest.raises(ConfigError, match=r"model\.denoiser\.width"):
        config_from_dict({"model": {"denoiser": {"width": 3}}})


def test_bad_values_are_rejected() -> None:
    with pytest.raises(ConfigError, match="kind"):
        config_from_dict({"model": {"schedule": {"kind": "quadratic"}}})
    with pytest.raises(ConfigError, match="train.lr"):
        config_from_dict({"train": {"lr": -1}})
    with pytest.raises(ConfigError, match="multiple of data.scale"):
        config_from_dict({"data": {"size": 33, "scale": 2}})
    with pytest.raises(ConfigError, match="residual"):
        config_from_dict({"model": {"residual": True, "in_channels": 1, "out_channels": 2}})


def test_missing_file_and_bad_yaml(tmp_path) -> None:
    with pytest.raises(ConfigError, match="no config file"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    bad.write_text(yaml.safe_dump([1, 2]))
    with pytest.raises(ConfigError, match="mapping"):
        load_config(bad)


def test_set_overrides() -> None:
    from microdiff.config import apply_overrides

    cfg = apply_overrides(load_config("demo"), ["train.steps=30", "model.schedule.kind=fixed-cosine",
                                                "sample.clip=null", "model.denoiser.channel_mults=[1, 2]"])
    assert cfg.train.steps == 30 and cfg.model.schedule.kind == "fixed-cosine"
    assert cfg.sample.clip is None and cfg.model.denoiser.channel_mults == [1, 2]
    for bad, msg in (("train.stepz=3", "not a config key"), ("train.steps=-1", "train.steps"),
                     ("trainsteps", "KEY=VALUE"), ("model.loss.eps.x=1", "not a config key")):
        with pytest.raises(ConfigError, match=msg):
            apply_overrides(load_config("demo"), [bad])


@pytest.mark.parametrize("name", ["demo", "demo-regression", "sim-mt", "sim-mixed", "biosr-sr", "paper"])
def test_every_preset_takes_the_common_overrides(name, tmp_path) -> None:
    from microdiff.config import apply_overrides

    cfg = apply_overrides(load_config(name), [
        "train.steps=30", "train.seed=3", "train.batch_size=2", "train.checkpoint_every=10",
        f"data.path={tmp_path}"])
    t = cfg.train
    assert (t.steps, t.seed, t.batch_size, t.checkpoint_every) == (30, 3, 2, 10)
    assert cfg.data.path == str(tmp_path)


def test_regression_baseline_trains_on_the_demos_data() -> None:
    """demo-regression is the demo's like-for-like baseline: same data (single-structure and
    mixed images), U-Net, steps, batch and learning rate."""
    demo, reg = load_config("demo"), load_config("demo-regression")
    assert reg.data == demo.data and demo.data.structure == "any"
    assert reg.model.denoiser == demo.model.denoiser == demo.model.zmd.net
    assert (reg.train.steps, reg.train.batch_size, reg.train.lr) == (
        demo.train.steps, demo.train.batch_size, demo.train.lr)


def test_base_key_inherits_and_overrides(tmp_path) -> None:
    assert load_config("demo-fixed-linear").model.schedule.kind == "fixed-linear"
    assert load_config("demo-fixed-linear").model.denoiser == load_config("demo").model.denoiser
    parent = tmp_path / "parent.yaml"
    parent.write_text("base: demo\ntrain: {steps: 7}\n")
    child = tmp_path / "child.yaml"
    child.write_text("base: parent.yaml\ntrain: {seed: 3}\nmodel: {schedule: {kind: fixed-cosine}}\n")
    cfg = load_config(child)
    assert (cfg.train.steps, cfg.train.seed, cfg.train.lr) == (7, 3, load_config("demo").train.lr)
    assert cfg.model.schedule.kind == "fixed-cosine"
    assert cfg.model.schedule.net == load_config("demo").model.schedule.net  # merged, not replaced


def test_base_key_errors_are_one_sentence(tmp_path) -> None:
    loop = tmp_path / "loop.yaml"
    loop.write_text("base: loop.yaml\n")
    with pytest.raises(ConfigError, match="refers back"):
        load_config(loop)
    missing = tmp_path / "missing.yaml"
    missing.write_text("base: no-such-preset\n")
    with pytest.raises(ConfigError, match="no preset of that name"):
        load_config(missing)


def test_the_removed_sampler_key_says_what_replaced_it() -> None:
    with pytest.raises(ConfigError, match="sample.eta"):
        apply_overrides(load_config("demo"), ["sample.sampler=ddim"])


def test_a_value_fitting_no_member_of_a_union_names_every_accepted_form() -> None:
    cases = {"data.data_consistency=newton": ("data.data_consistency: got 'newton'", "boolean", "'tie'"),
             "data.tie_regularization=fast": ("data.tie_regularization: got 'fast'", "number", "'auto'")}
    for override, parts in cases.items():
        with pytest.raises(ConfigError) as err:
            apply_overrides(load_config("qpi-2shot-tie"), [override])
        message = str(err.value)
        assert all(p in message for p in parts) and ".bool" not in message and "\n" not in message
    with pytest.raises(ConfigError, match=r"^--set: train.steps: Input should be greater than or equal to 1"):
        apply_overrides(load_config("demo"), ["train.steps=0"])  # plain fields keep pydantic's sentence


def test_zero_samples_needs_the_one_pass_design() -> None:
    """samples 0 (and val_samples 0) is the one-pass prediction: only with μ(x) as the point
    estimate and the variance head as the std; otherwise one sentence naming the key."""
    head = ["model.zmd.variance_net={base_channels: 8, channel_mults: [1], num_res_blocks: 1}",
            "sample.uncertainty=head"]
    sampled = load_config("demo-fixed-cosine")  # the demo's design with the samples' spread as std
    cfg = apply_overrides(sampled, [*head, "sample.samples=0", "train.val_samples=0"])
    assert cfg.sample.samples == 0 and cfg.train.val_samples == 0
    for key in ("sample.samples", "train.val_samples"):
        with pytest.raises(ConfigError, match=key.replace(".", r"\.") + "=0"):
            apply_overrides(sampled, [f"{key}=0"])
        with pytest.raises(ConfigError, match="point_estimate=mean-net"):
            apply_overrides(sampled, [*head, "sample.point_estimate=sample-mean", f"{key}=0"])
    with pytest.raises(ConfigError, match="sample.samples"):
        apply_overrides(load_config("demo"), ["sample.samples=-1"])
    assert apply_overrides(load_config("demo-regression"), ["sample.samples=0"]).sample.samples == 0


def test_super_resolution_needs_as_many_output_channels_as_input_channels() -> None:
    """sr outputs go back to input units channel by channel (the input's percentiles), so a
    2 → 1 channel sr model could train but not predict: refused at the config."""
    with pytest.raises(ConfigError, match=r"in_channels \(2\) must equal model.out_channels \(1\)"):
        apply_overrides(load_config("demo"), ["model.in_channels=2"])
    two = apply_overrides(load_config("demo"), ["model.in_channels=2", "model.out_channels=2"])
    assert (two.model.in_channels, two.model.out_channels) == (2, 2)


def test_data_consistency_does_not_take_the_heads_std() -> None:
    """QPI's data consistency refines samples and gives their spread as the std, so a variance
    head's σ(x) would be ignored (and samples 0 would leave nothing to refine): refused."""
    head = ["model.zmd.variance_net={base_channels: 8, channel_mults: [1], num_res_blocks: 1}",
            "sample.uncertainty=head"]
    tie = load_config("qpi-2shot-tie")
    assert tie.data.data_consistency and tie.model.zmd.enabled
    with pytest.raises(ConfigError, match="data_consistency.*uncertainty=head"):
        apply_overrides(tie, head)
    assert apply_overrides(tie, [*head, "data.data_consistency=false"]).sample.uncertainty == "head"


def test_a_key_of_a_section_set_whole_in_the_same_list() -> None:
    """``model.zmd.net={...}`` then ``model.zmd.net.norm=pixel``: the second finds its key (the
    section's defaults are filled in after the first) and the first's values stay."""
    whole = "model.zmd.net={base_channels: 16, channel_mults: [1, 2], num_res_blocks: 1}"
    cfg = apply_overrides(load_config("demo"), [whole, "model.zmd.net.norm=pixel"])
    assert cfg.model.zmd.net.norm == "pixel" and cfg.model.zmd.net.base_channels == 16
    assert cfg.model.zmd.net.channel_mults == [1, 2]
