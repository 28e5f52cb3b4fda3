"""Full training state (for ``--resume``) and the inference bundle.

Training state: ``RUN/checkpoints/step_NNNNNNNN.pt`` (model, EMA, optimiser, step, RNG
states, resolved config, version), written atomically, plus ``RUN/checkpoints/latest``
naming the newest one; only the newest ``keep`` are kept.

The inference bundle: a folder a trained model travels in.

``MODEL/weights.safetensors`` (all weights, EMA if trained with EMA) and
``MODEL/bundle.json``: a :class:`Bundle` (the resolved model and sampling config, the scale
factor, the input pixel size (µm) the model was trained at, the normalisation percentiles,
the task and the microdiff version). Written atomically (temporary folder + rename);
reading validates every key.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch
from pydantic import ValidationError
from safetensors.torch import load_file, save_file
from torch import nn

from ._version import __version__
from .calibration import Calibration
from .config import ModelConfig, SampleConfig, first_error
from .data.io import atomic_write_bytes
from .data.normalize import PERCENTILES
from .data.tasks import Task
from .errors import UserError
from .models import ImageModel, build_model

FORMAT = 2  # of the inference bundle (2: sample.point_estimate, model.zmd.scaled, no sample.sampler)
READABLE_FORMATS = (1, 2)
CHECKPOINT_FORMAT = 1  # of the training state


class BundleError(UserError):
    """A model folder is missing, incomplete or from an incompatible version."""


@dataclass(frozen=True)
class Bundle:
    """What a model folder says about its model (``bundle.json``), typed.

    model, sample: the resolved model and sampling configs; scale: the super-resolution
    factor (output pixels per input pixel); pixel_size_um: the input pixel size the model
    was trained at (None if unknown); percentiles: of the input normalisation (sr); task:
    the :class:`~microdiff.data.tasks.Task` (normalisation, units, names, baseline);
    weights: ``ema`` or ``model``; microdiff_version: of the writer; calibration: of the
    std and the interval (:class:`~microdiff.calibration.Calibration`), None if never fitted.
    """

    model: ModelConfig
    sample: SampleConfig
    scale: int
    pixel_size_um: float | None = None
    percentiles: tuple[float, float] = PERCENTILES
    task: Task = field(default_factory=Task)
    weights: str = "ema"
    microdiff_version: str = __version__
    calibration: Calibration | None = None

    @property
    def image_channels(self) -> int:
        """Channels of the images a user gives (the model's input channels less those the
        task computes from them, e.g. the TIE baseline channel)."""
        return self.model.in_channels - self.task.extra_channels

    def to_dict(self) -> dict:
        """The JSON of ``bundle.json``."""
        return {"format": FORMAT, "weights": self.weights, "microdiff_version": self.microdiff_version,
                "model": self.model.model_dump(mode="json"), "sample": self.sample.model_dump(mode="json"),
                "scale": self.scale, "pixel_size_um": self.pixel_size_um,
                "normalization": {"lo": self.percentiles[0], "hi": self.percentiles[1]},
                "task": self.task.to_dict(),
                "calibration": self.calibration.to_dict() if self.calibration else None}

    @classmethod
    def from_dict(cls, meta: dict, source: str | Path = "bundle.json") -> Bundle:
        """Validate ``bundle.json``'s mapping (older bundles: no ``task`` is sr, a
        ``sampler`` key becomes η); one sentence naming ``source`` when it does not fit."""
        if meta.get("format") not in READABLE_FORMATS:
            raise BundleError(f"{source}: bundle format {meta.get('format')!r}; this microdiff reads "
                              f"{', '.join(map(str, READABLE_FORMATS))}")
        try:
            norm, scale = meta["normalization"], meta["scale"]
            if not isinstance(scale, int) or scale < 1:
                raise ValueError(f"scale must be a whole number ≥ 1, got {scale!r}")
            model = ModelConfig.model_validate(meta["model"])
            sample = SampleConfig.model_validate(meta["sample"])
            if sample.point_estimate == "mean-net" and model.kind == "cvdm" and not model.zmd.enabled:
                raise ValueError("sample.point_estimate is mean-net but the model has no mean network")
            if sample.uncertainty == "head" and model.kind == "cvdm" and model.zmd.variance_net is None:
                raise ValueError("sample.uncertainty is head but the model has no variance head")
            return cls(model=model, sample=sample, scale=scale, pixel_size_um=meta.get("pixel_size_um"),
                       percentiles=(float(norm["lo"]), float(norm["hi"])),
                       task=Task.from_dict(meta.get("task")), weights=meta.get("weights", "ema"),
                       microdiff_version=meta.get("microdiff_version", "?"),
                       calibration=Calibration.from_dict(cal) if (cal := meta.get("calibration")) else None)
        except ValidationError as err:
            section = err.title.removesuffix("Config").lower()  # ModelConfig → model
            raise BundleError(f"not a valid model description: {first_error(err, f'{source}: {section}')}"
                              ) from None
        except (KeyError, TypeError, ValueError) as err:
            what = f"no key {err}" if isinstance(err, KeyError) else str(err)
            raise BundleError(f"{source}: not a valid model description ({what})") from None


def save_bundle(
    folder: str | Path,
    model: nn.Module,
    model_cfg: ModelConfig,
    sample_cfg: SampleConfig,
    scale: int,
    pixel_size_um: float | None = None,
    percentiles: tuple[float, float] = PERCENTILES,
    overwrite: bool = False,
    task: Task | None = None,
) -> Path:
    """Write ``folder`` (atomically): ``model``'s weights and its :class:`Bundle`; refuses
    to replace an existing folder unless asked. ``task``: default super-resolution."""
    folder = Path(folder)
    if folder.exists() and not overwrite:
        raise BundleError(f"{folder} exists; refusing to overwrite it")
    bundle = Bundle(model_cfg, sample_cfg, scale, pixel_size_um, percentiles, task or Task())
    tmp = folder.with_name(f".{folder.name}.tmp")
    try:
        _write_bundle(tmp, folder, model, bundle)
    except OSError as err:  # a full disk: no partial folder; an existing bundle stays as it was
        shutil.rmtree(tmp, ignore_errors=True)
        raise BundleError(f"{folder}: could not be written ({err.strerror or err}); "
                          "nothing was changed there") from None
    return folder


def _write_bundle(tmp: Path, folder: Path, model: nn.Module, bundle: Bundle) -> None:
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(tmp / "weights.safetensors"))
    (tmp / "bundle.json").write_text(json.dumps(bundle.to_dict(), indent=2))
    for f in tmp.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    old = folder.with_name(f".{folder.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        os.replace(folder, old)  # the previous bundle stays whole until the new one is in place
    os.replace(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)


def read_bundle(folder: str | Path) -> Bundle:
    """A model folder's :class:`Bundle` (``bundle.json``, checked) without loading its weights."""
    folder = Path(folder)
    meta_path, weights = folder / "bundle.json", folder / "weights.safetensors"
    if not meta_path.is_file() or not weights.is_file():
        raise BundleError(
            f"{folder}: not a microdiff model folder (needs bundle.json and weights.safetensors)")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise BundleError(f"{meta_path}: not valid JSON") from None
    if not isinstance(meta, dict):
        raise BundleError(f"{meta_path}: not a model description (a JSON object)")
    return Bundle.from_dict(meta, folder)


def write_calibration(folder: str | Path, calibration: Calibration | None) -> Bundle:
    """Store ``calibration`` (None: remove it) in a model folder's ``bundle.json``,
    atomically; the weights are not touched. Returns the updated :class:`Bundle`."""
    from dataclasses import replace

    folder = Path(folder)
    bundle = replace(read_bundle(folder), calibration=calibration)
    payload = json.dumps(bundle.to_dict(), indent=2).encode()
    atomic_write_bytes(folder / "bundle.json", payload, overwrite=True)
    return bundle


def load_bundle(folder: str | Path, device: str = "cpu") -> tuple[ImageModel, Bundle]:
    """(model in eval mode, its :class:`Bundle`) from a model folder."""
    folder = Path(folder)
    bundle, weights = read_bundle(folder), folder / "weights.safetensors"
    model = build_model(bundle.model)
    try:
        missing, unexpected = model.load_state_dict(load_file(str(weights), device=device), strict=False)
    except RuntimeError:  # tensors of the wrong shape
        raise BundleError(f"{folder}: weights do not match the config (tensor shapes differ)") from None
    except Exception as err:  # a truncated or foreign weights file
        raise BundleError(f"{weights}: not readable ({err.__class__.__name__}); "
                          "copy the model folder again") from None
    if missing or unexpected:
        raise BundleError(f"{folder}: weights do not match the config "
                          f"({len(missing)} missing, {len(unexpected)} unexpected tensors)")
    return model.to(device).eval(), bundle


class CheckpointError(UserError):
    """A training checkpoint is missing or unreadable."""


def save_training_state(folder: str | Path, state: dict, step: int, keep: int = 2) -> Path:
    """Write ``state`` (stamped with the checkpoint format and version) as
    ``folder/step_NNNNNNNN.pt`` atomically, point ``latest`` at it and delete all but the
    newest ``keep`` checkpoints."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"step_{step:08d}.pt"
    buf = io.BytesIO()
    torch.save(state | {"checkpoint_format": CHECKPOINT_FORMAT, "microdiff_version": __version__}, buf)
    atomic_write_bytes(path, buf.getvalue(), overwrite=True)
    atomic_write_bytes(folder / "latest", f"{path.name}\n".encode(), overwrite=True)
    for old in sorted(folder.glob("step_*.pt"))[:-keep]:
        if old != path:
            old.unlink()
    return path


def latest_checkpoint(folder: str | Path) -> Path | None:
    """The checkpoint ``folder/latest`` names, or None when there is none."""
    pointer = Path(folder) / "latest"
    if not pointer.is_file():
        return None
    path = Path(folder) / pointer.read_text().strip()
    if not path.is_file():
        raise CheckpointError(f"{pointer} names {path.name}, which does not exist")
    return path


def load_training_state(path: str | Path, device: str | torch.device = "cpu") -> dict:
    """The dict :func:`save_training_state` wrote; refuses another checkpoint format."""
    try:
        state = torch.load(path, map_location=device, weights_only=False)
    except Exception as err:  # a truncated or foreign file
        raise CheckpointError(f"{path}: not a readable microdiff checkpoint ({err.__class__.__name__})"
                              ) from None
    if not isinstance(state, dict) or "model" not in state or "step" not in state:
        raise CheckpointError(f"{path}: not a microdiff training checkpoint")
    found = state.get("checkpoint_format", CHECKPOINT_FORMAT)  # unstamped: the first format
    if found != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path}: checkpoint format {found} (microdiff {state.get('microdiff_version', '?')}); "
            f"this microdiff {__version__} reads format {CHECKPOINT_FORMAT}: resume with that "
            "version, or start a new run")
    return state
