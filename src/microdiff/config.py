"""Validated configuration: pydantic models (unknown keys rejected), YAML in and out.

Sections: ``model`` (networks, schedule, loss), ``data`` (a paired folder or a
generator), ``train`` and ``sample``. Presets live in ``microdiff/configs/*.yaml``
(``configs/`` at the repository root points there); :func:`load_config` takes a preset
name or a path.
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, ValidationError, model_validator

from .errors import ConfigError, first_error
from .nets.unet import UNetSpec
from .options import (
    Device,
    EpsGrad,
    Generator,
    GradClipScope,
    Grid,
    InputNorm,
    ModelKind,
    Optimizer,
    PhaseSource,
    PointEstimate,
    RegressionLoss,
    ScheduleKind,
    Structure,
    TaskKind,
    Uncertainty,
)
from .presets import preset_names, read_yaml  # noqa: F401  (preset_names re-exported)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ScheduleConfig(_Strict):
    """``kind``: learned-exact (the default: ρ = ∫τ exactly, γ monotone by construction; it
    beat the faithful parameterisation and both fixed schedules on the benchmark of
    docs/benchmarks.md), learned (faithful CVDM, as in the authors' code), fixed-linear or
    fixed-cosine (conditional-DDPM baselines)."""

    kind: ScheduleKind = "learned-exact"
    net: UNetSpec = Field(default_factory=lambda: UNetSpec(32, [1, 2, 4], 1))
    time_hidden: int = Field(1024, ge=1, description="hidden units of the faithful time nets")
    exact_components: int = Field(16, ge=1, description="sigmoid components of learned-exact ρ")
    # --- options that change how a learned schedule learns (issue 5; no effect on fixed) ---
    lr_scale: float = Field(1.0, ge=0, description="learning-rate multiplier for the schedule's "
                            "parameters (0 freezes the schedule at its initialisation)")
    lambda_range: tuple[float, float] | None = Field(
        None, description="bounds [lo, hi] on λ(x), lo < ln 2 < hi (λ = ln 2 is the reference "
        "schedule); unset: λ = softplus(U(x)), unbounded")
    eps_grad: EpsGrad = Field(
        "full", description="how the ε-loss reaches the schedule: full (the paper), elbo (its "
        "gradient weighted per pixel by −d log SNR/dt, the VDM/ELBO weighting; the denoiser's "
        "gradient is unchanged) or none (the schedule learns from its own terms only)")

    @model_validator(mode="after")
    def _lambda_range(self) -> ScheduleConfig:
        if self.lambda_range is not None:
            lo, hi = self.lambda_range
            if not 0 <= lo < math.log(2) < hi:
                raise ValueError(f"schedule.lambda_range must satisfy 0 ≤ lo < ln 2 (0.693) < hi, "
                                 f"got [{lo}, {hi}]")
        return self


class LossConfig(_Strict):
    """Weights of the loss terms (METHOD.md: 1, 2, 2, 2) and the curvature weight α."""

    eps: float = Field(1.0, ge=0)
    beta: float = Field(2.0, ge=0)
    prior: float = Field(2.0, ge=0)
    gamma: float = Field(2.0, ge=0)
    mean: float = Field(1.0, ge=0, description="ZMD mean-network MSE")
    variance: float = Field(1.0, ge=0, description="the variance head's Gaussian likelihood")
    alpha: float = Field(1e-3, ge=0)

    def weights(self) -> dict[str, float]:
        return {"eps": self.eps, "beta": self.beta, "prior": self.prior,
                "gamma": self.gamma, "mean": self.mean, "variance": self.variance}


class ZMDConfig(_Strict):
    """Zero-Mean Diffusion: a U-Net μ(x) trained with MSE and diffusion of (y − x_res − sg[μ])/σ."""

    enabled: bool = False
    sigma: float = Field(0.5, gt=0)
    net: UNetSpec = Field(default_factory=lambda: UNetSpec(32, [1, 2, 4], 1))
    scaled: bool = Field(False, description="μ(x) = target_scale · net(x), MSE in units of target_scale, "
                         "as the regression model (false: the authors' μ(x) = net(x), MSE in target units)")
    variance_net: UNetSpec | None = Field(None, description="the variance head: one-pass σ(x); docs/core.md")


class ModelConfig(_Strict):
    """``kind``: ``cvdm`` (the diffusion model) or ``regression`` (a baseline: the
    ``denoiser`` U-Net trained to map x to y with ``regression_loss``; the ``schedule``,
    ``loss``, ``zmd`` and ``timesteps`` keys then do not apply)."""

    kind: ModelKind = "cvdm"
    regression_loss: RegressionLoss = "mse"
    in_channels: int = Field(1, ge=1)
    out_channels: int = Field(1, ge=1)
    denoiser: UNetSpec = Field(default_factory=lambda: UNetSpec(32, [1, 2, 4], 2))
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    zmd: ZMDConfig = Field(default_factory=ZMDConfig)
    residual: bool = Field(False, description="diffuse y − b and add b back; b: the condition's last "
                           "out_channels channels (sr: the upsampled input; qpi with baseline_channel: TIE)")
    target_scale: float = Field(
        1.0, gt=0, description="divide the diffused quantity by this (≈ its std; 1 = authors)")
    timesteps: int = Field(200, ge=2, description="T: sets t0 = 1/T and t1 = 1 − 1/T")

    @model_validator(mode="after")
    def _residual_channels(self) -> ModelConfig:
        if self.residual and self.in_channels < self.out_channels:
            raise ValueError("model.residual needs in_channels ≥ out_channels (the residual is taken "
                             "around the condition's last out_channels channels)")
        return self


class DataConfig(_Strict):
    """Where training pairs come from, and the patches cut from them.

    ``path`` set: a paired folder (``input/``, ``target/``); whole files are held out for
    validation (``val_fraction``). ``path`` unset: ``generator`` (the BioSR-like ``simulator``
    or ``filaments``) makes ``n_train`` training and ``n_val`` held-out images from disjoint
    random streams (neither coincides with ``microdiff simulate`` output).
    """

    path: str | None = Field(None, description="paired data folder; unset: the generator below")
    generator: Generator = "simulator"
    structure: Structure = "mixed"
    level: int | None = Field(None, ge=1, le=9, description="simulator signal level; unset: drawn")
    image_size: int = Field(128, ge=16, description="size of generated images (target pixels)")
    size: int = Field(64, ge=16, description="training patch size (target pixels)")
    scale: int = Field(2, ge=1, description="super-resolution factor")
    n_train: int = Field(512, ge=1, description="generated training images")
    n_val: int = Field(8, ge=1, description="generated held-out images; with data.path: the most validated")
    val_fraction: float = Field(0.1, gt=0, lt=1, description="data.path: fraction of files held out")
    photons: float = Field(200.0, gt=0, description="filaments: photon count of bright pixels")
    min_contrast: float = Field(0.0, ge=0, le=1, description="reject patches emptier than this")
    augment: bool = Field(True, description="random 90° rotations and flips")
    pixel_size_um: float | None = Field(None, gt=0, description="input pixel size if the files carry none")
    task: TaskKind = Field("sr", description="sr: super-resolution; qpi-*: phase (rad) from defocused "
                           "intensities (data.path pairs, or simulated from data.phase_source when unset)")
    phase_source: PhaseSource = Field(
        "natural", description="qpi without data.path: phase maps from scikit-image's images, "
        "the simulator's structures (data.structure), synthetic cells, or natural+cells (half each)")
    phase_range: float = Field(3.5, gt=0, description="qpi: phase range in rad (targets are φ / range)")
    noise: tuple[float, float] = Field((0.0, 0.2), description="qpi simulation: noise level ℓ ~ U(lo, hi)")
    qpi_input_norm: InputNorm = Field(
        "minmax", description="qpi: the input stack min-max normalised (the paper) or divided by its "
        "mean (keeps the contrast that sets the phase's scale; needs raw intensities, no camera offset)")
    baseline_channel: bool = Field(False, description="qpi-2shot: append the TIE phase of the whole image "
        "(φ / phase_range) to the condition as its last channel; model.residual learns the correction to "
        "it (needs data.qpi_input_norm=mean and model.in_channels = 3)")
    tie_regularization: PositiveFloat | Literal["auto"] = Field(1e-3, description="the TIE baseline's "
        "Tikhonov weight α (µm⁻⁴; larger damps more noise), or auto: α = 0.1 σ̂², σ̂ the image's noise")
    tie_extra_regularizations: list[PositiveFloat] = Field(default_factory=list, description="more TIE "
        "channels at these α (µm⁻⁴) before the baseline's; each adds one to model.in_channels")
    data_consistency: bool | Literal["tie", "tie+wiener"] = Field(False, description="qpi-2shot: move the "
        "output towards the intensities: tie (a TIE Gauss-Newton step), tie+wiener (= true; then CTF Wiener)")

    @model_validator(mode="after")
    def _sizes(self) -> DataConfig:
        if self.task != "sr" and self.scale != 1:
            raise ValueError(f"data.task {self.task} needs data.scale=1 (input and phase share a grid)")
        if not 0 <= self.noise[0] <= self.noise[1]:
            raise ValueError(f"data.noise must satisfy 0 ≤ lo ≤ hi, got {list(self.noise)}")
        if self.baseline_channel and self.task != "qpi-2shot":
            raise ValueError(f"data.baseline_channel needs data.task=qpi-2shot (the TIE baseline), not "
                             f"{self.task}: sr's baseline is the condition, qpi-poly has no closed-form one")
        if self.baseline_channel and self.qpi_input_norm != "mean":
            raise ValueError("data.baseline_channel needs data.qpi_input_norm=mean: TIE's phase scale "
                             "comes from the contrast (I₊ − I₋)/I₀, which min-max normalisation changes")
        if self.size % self.scale:
            raise ValueError(f"data.size ({self.size}) must be a multiple of data.scale ({self.scale})")
        if self.path is None and self.generator == "simulator":
            if self.image_size % self.scale:
                raise ValueError(f"data.image_size ({self.image_size}) must be a multiple of "
                                 f"data.scale ({self.scale})")
            if self.image_size < self.size:
                raise ValueError(f"data.image_size ({self.image_size}) must be at least "
                                 f"data.size ({self.size})")
        return self


class TrainConfig(_Strict):
    """The LR is warmed up linearly over ``warmup`` steps, then constant, and the EMA decay
    is constant: neither depends on ``steps``, so a run resumed with more steps follows
    exactly the path of a run started with them."""

    steps: int = Field(400, ge=1)
    batch_size: int = Field(8, ge=1)
    optimizer: Optimizer = "adam"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0, description="AdamW decoupled weight decay")
    warmup: int = Field(20, ge=0, description="linear LR warm-up steps")
    grad_clip: float = Field(1.0, gt=0)
    grad_clip_scope: GradClipScope = Field(
        "global", description="clip the gradient norm of all parameters together (global) or of each "
        "module (denoiser, schedule, mean net) on its own (per-module)")
    ema: float = Field(0.99, ge=0, lt=1, description="EMA decay of all weights")
    ema_warmup: bool = Field(False, description="EMA decay min(ema, (1 + s)/(10 + s)) at step s")
    seed: int = 0
    device: Device = Field("auto", description="auto: cuda when available")
    bf16: bool = Field(True, description="bf16 autocast on CUDA (schedule math stays float32)")
    channels_last: bool | None = Field(None, description="channels-last memory layout (default: CUDA only)")
    compile: bool = Field(False, description="torch.compile the denoiser (the first steps compile)")
    log_every: int = Field(10, ge=1, description="steps between stats.jsonl lines")
    checkpoint_every: int = Field(100, ge=1, description="steps between full-state checkpoints")
    keep_checkpoints: int = Field(2, ge=1, description="checkpoints kept (the newest)")
    val_every: int = Field(100, ge=0, description="steps between validations (0: only at the end)")
    val_steps: int = Field(20, ge=1, description="sampling steps of validation")
    val_samples: int = Field(4, ge=0, description="posterior samples of validation (0: one pass)")
    calibrate: bool = Field(True, description="at the end, calibrate std and interval on held-out images")
    calibrate_intensity: bool = Field(False, description="the final calibration also fits the gain per image "
                                             "(and then the binned std map)")


class SampleConfig(_Strict):
    """How posterior samples are drawn: ``samples`` (K) chains of ``steps`` steps, with
    stochasticity ``eta`` (1: ancestral DDPM steps, 0: deterministic DDIM)."""

    steps: int = Field(50, ge=1)
    samples: int = Field(8, ge=0, description="posterior samples K; 0: one pass, μ(x) and the head's σ(x) "
                         "(point_estimate=mean-net, uncertainty=head)")
    eta: float = Field(1.0, ge=0, le=1, description="stochasticity of a step: 1 ancestral (DDPM), "
                       "0 deterministic (DDIM), in between DDIM with η")
    grid: Grid = "gamma"
    point_estimate: PointEstimate = Field(
        "sample-mean", description="the prediction (NAME_mean.tif): the mean of the K samples (the "
        "paper), or the mean network μ(x) of Zero-Mean Diffusion (one pass; needs model.zmd.enabled)")
    uncertainty: Uncertainty = Field("samples", description="NAME_std.tif: the K samples' spread, or "
                                     "the variance head's σ(x) (model.zmd.variance_net; samples=0: one pass)")
    clip: float | None = Field(
        None, gt=0, description="bound on |ŷ0| in target units (residual y − x with the residual target)")
    gamma_min: float | None = Field(
        None, gt=0, lt=1, description="start sampling at γ ≥ this (unset: the schedule's own γ(1), "
        "floored at 1e-6); 1e-3 stops chains leaving the data when γ(1) has drifted to ~1e-5")
    tile: int = Field(256, ge=8, description="predict, evaluate and calibrate run the networks in "
                      "overlapping tiles of this side (output pixels); the --tile option overrides it")
    overlap: int = Field(32, ge=0, description="the tiles' overlap in output pixels, below tile (--overlap)")

    @model_validator(mode="after")
    def _tiles(self) -> SampleConfig:
        if self.overlap >= self.tile:
            raise ValueError(f"sample.overlap ({self.overlap}) must be below sample.tile ({self.tile})")
        return self

    def options(self) -> dict:
        """The keyword arguments of ``model.sample`` that this config sets (besides steps and K)."""
        return {"eta": self.eta, "grid": self.grid, "clip": self.clip, "point_estimate": self.point_estimate,
                "gamma_min": self.gamma_min, "uncertainty": self.uncertainty}

    @model_validator(mode="before")
    @classmethod
    def _sampler_key(cls, data: Any) -> Any:
        """Configs and bundles written before η was the only knob say ``sampler``:
        ``ancestral`` meant η = 1 whatever ``eta`` said, ``ddim`` meant ``eta``."""
        if isinstance(data, dict) and "sampler" in data:
            data = dict(data)
            sampler = data.pop("sampler")
            if sampler == "ancestral":
                data["eta"] = 1.0
            elif sampler != "ddim":
                raise ValueError(f"sampler {sampler!r} is not a sampler (ancestral or ddim); "
                                 "set sample.eta instead (1 ancestral, 0 DDIM)")
        return data


class Config(_Strict):
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    sample: SampleConfig = Field(default_factory=SampleConfig)

    @model_validator(mode="after")
    def _baseline_channels(self) -> Config:
        need = 2 + len(self.data.tie_extra_regularizations) + self.model.out_channels
        for name in ("tie_extra_regularizations", "data_consistency"):
            if getattr(self.data, name) and not self.data.baseline_channel:
                raise ValueError(f"data.{name} needs data.baseline_channel=true (the TIE physics)")
        if self.data.baseline_channel and self.model.in_channels != need:
            raise ValueError(f"data.baseline_channel adds {need - 2} TIE channel(s) to the 2 intensities: "
                             f"set model.in_channels={need}, not {self.model.in_channels}")
        return self

    @model_validator(mode="after")
    def _sr_channels(self) -> Config:
        m = self.model
        if self.data.task == "sr" and m.in_channels != m.out_channels:
            raise ValueError(f"super-resolution puts each output channel back in its input channel's "
                             f"intensity units: model.in_channels ({m.in_channels}) must equal "
                             f"model.out_channels ({m.out_channels})")
        return self

    @model_validator(mode="after")
    def _point_estimate(self) -> Config:
        s, m = self.sample, self.model
        if s.point_estimate == "mean-net" and m.kind == "cvdm" and not m.zmd.enabled:
            raise ValueError("sample.point_estimate=mean-net needs the mean network (model.zmd.enabled=true)")
        if s.uncertainty == "head" and m.kind == "cvdm" and (not m.zmd.enabled or m.zmd.variance_net is None):
            raise ValueError("sample.uncertainty=head needs the variance head (model.zmd.variance_net)")
        if s.uncertainty == "head" and m.kind == "cvdm" and self.data.data_consistency:
            raise ValueError("data.data_consistency refines posterior samples and gives their spread as "
                             "the std; it does not combine with sample.uncertainty=head (use samples)")
        for key, k in (("sample.samples", s.samples), ("train.val_samples", self.train.val_samples)):
            if k == 0 and m.kind == "cvdm" and (s.point_estimate, s.uncertainty) != ("mean-net", "head"):
                raise ValueError(f"{key}=0 (one pass, no samples) needs sample.point_estimate=mean-net "
                                 "and sample.uncertainty=head")
        return self


def config_from_dict(data: dict, source: str = "config") -> Config:
    """Validate a plain dict; raises :class:`ConfigError` with one clear sentence."""
    try:
        return Config.model_validate(data or {})
    except ValidationError as err:
        raise ConfigError(first_error(err, source)) from None


def load_config(path_or_preset: str | Path) -> Config:
    """Load a YAML file, or a preset by name (``demo``, ``paper``, ...). A file may start
    from another with ``base: PRESET_OR_FILE`` and change only some keys."""
    data, path = read_yaml(path_or_preset)
    return config_from_dict(data, str(path))


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """``["train.steps=30", "model.schedule.kind=learned-exact", ...]`` applied to ``cfg``.

    Values are parsed as YAML (``3``, ``1e-4``, ``true``, ``[1, 2]``, ``null``); the result
    is validated again, so a wrong key or value is a :class:`ConfigError`.
    """
    data = cfg.model_dump(mode="json")
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. train.steps=30")
        *parents, leaf = key.strip().split(".")
        node = data
        for part in parents:
            if not isinstance(node.get(part), dict):
                raise ConfigError(f"--set {item!r}: {key.strip()!r} is not a config key")
            node = node[part]
        if leaf not in node:
            hint = ("; the sampler is set by sample.eta (1: ancestral, 0: deterministic DDIM)"
                    if key.strip() == "sample.sampler" else "")
            raise ConfigError(f"--set {item!r}: {key.strip()!r} is not a config key{hint}")
        try:
            node[leaf] = yaml.safe_load(raw)
        except yaml.YAMLError:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML") from None
        if isinstance(node[leaf], dict):  # a whole section: fill its defaults for later keys
            with contextlib.suppress(ValidationError):  # if invalid, the final validation says why
                data = Config.model_validate(data).model_dump(mode="json")
    return config_from_dict(data, "--set")


def config_to_yaml(cfg: Config) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
