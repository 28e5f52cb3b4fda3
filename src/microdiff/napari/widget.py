"""The napari prediction widget: an image layer and a model folder in, the posterior mean
and std (uncertainty) out as two new layers on the model's output grid.

Prediction runs in a worker thread (the viewer stays responsive) with a progress bar over
the network steps; the output layers get the input's scale divided by the model's scale
factor (and the matching half-pixel shift, see :mod:`.geometry`), so they overlay the input.
A 2-D layer is one image; a 3-D layer is a channel stack (``CYX``) for a model with that many
input channels (QPI) or a Z stack predicted plane by plane (``ZYX``) for a one-channel model;
an RGB layer is three channels (``qpi-poly``).
"""

from __future__ import annotations

from pathlib import Path

import napari.viewer
import numpy as np
from magicgui.widgets import ComboBox, Container, FileEdit, Label, ProgressBar, PushButton, SpinBox
from napari.layers import Image
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error
from qtpy.QtCore import QObject, Signal

from ..checkpoint import read_bundle
from ..errors import UserError
from ..predictor import Prediction, Predictor, load, predict_planes
from .geometry import output_geometry
from .readers import LAST_MODEL


class _Progress(QObject):
    """Carries ``(done, total)`` from the worker thread to the GUI thread (queued)."""

    step = Signal(int, int)


def layer_as_model_input(data: np.ndarray, rgb: bool, predictor: Predictor) -> tuple[np.ndarray, str]:
    """A layer's data as ``YX``, ``CYX`` or ``ZYX`` (planes one by one) for ``predictor``;
    raises :class:`UserError` with one sentence when it does not fit the model."""
    data = np.asarray(data)
    c = predictor.in_channels
    if rgb:
        data = np.moveaxis(data, -1, 0)
        if data.shape[0] == c:
            return data, "CYX"
        raise UserError(f"the model expects {c} channel(s); an RGB layer has {data.shape[0]}")
    if data.ndim == 2 and c == 1:
        return data, "YX"
    if data.ndim == 3 and c > 1 and data.shape[0] == c:
        return data, "CYX"
    if data.ndim == 3 and c == 1:
        return data, "ZYX"
    kind = "2-D" if c == 1 else f"{c}-channel"
    raise UserError(f"the model expects {c} input channel(s) (a {kind} image); "
                    f"the layer has shape {data.shape}")


def predict_layer(predictor: Predictor, data: np.ndarray, axes: str, samples: int, steps: int, seed: int,
                  progress=None) -> Prediction:
    """``predictor`` on ``data`` (``YX``/``CYX``, or ``ZYX`` plane by plane with one seed);
    ``progress(done, total)`` over all planes."""
    if axes != "ZYX":
        return predictor.predict(data, axes=axes, samples=samples, steps=steps, seed=seed, progress=progress)
    return predict_planes(predictor, data, progress, samples=samples, steps=steps, seed=seed)


def std_display_range(std: np.ndarray, percentile: float = 99.5) -> tuple[float, float]:
    """Contrast limits for a std layer: 0 to its ``percentile``-th percentile. A few pixels can
    carry a std far above the rest (the variance head at the brightest spot of a sparse
    image: up to 1000× the image's 99th percentile on simulated microtubules), which min–max
    limits would turn into one bright dot on a black map; the layer's data stay untouched."""
    finite = std[np.isfinite(std)]
    top = float(np.percentile(finite, percentile)) if finite.size else 1.0
    return 0.0, top if top > 0 else 1.0


class PredictWidget(Container):
    """Predict (CVDM): choose an image layer and a model folder, press *Predict*."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=True)
        self._viewer = viewer
        self.image = ComboBox(label="image", choices=self._image_layers, nullable=True)
        self.model_folder = FileEdit(label="model folder", mode="d",
                                     value=LAST_MODEL[0] if LAST_MODEL else Path.home())
        self.samples = SpinBox(label="samples (K)", value=8, min=0, max=256,
                               tooltip="posterior samples: their mean (or the mean network) is the "
                                       "prediction, their std (or the variance head's) the uncertainty; "
                                       "0: one pass, for a model with the variance head")
        self.steps = SpinBox(label="steps", value=20, min=1, max=5000, tooltip="sampling steps per sample")
        self.seed = SpinBox(label="seed", value=0, min=0, max=2**31 - 1, tooltip="same seed, same output")
        self.device = ComboBox(label="device", choices=["auto", "cpu", "cuda"], value="auto")
        self.run_button = PushButton(text="Predict")
        self.progress = ProgressBar(label="progress", value=0, min=0, max=1)
        self.status = Label(label="", value="choose an image layer and a model folder")
        self.extend([self.image, self.model_folder, self.samples, self.steps, self.seed, self.device,
                     self.run_button, self.progress, self.status])
        self._signals = _Progress()
        self._signals.step.connect(self._on_progress)
        self.run_button.changed.connect(self.run)
        self.model_folder.changed.connect(self._model_chosen)
        viewer.layers.events.inserted.connect(self.reset_choices)
        viewer.layers.events.removed.connect(self.reset_choices)
        self.worker = None
        if LAST_MODEL:
            self._model_chosen()

    def _image_layers(self, _widget=None) -> list[tuple[str, Image]]:
        return [(layer.name, layer) for layer in self._viewer.layers if isinstance(layer, Image)]

    @property
    def busy(self) -> bool:
        """True while a prediction runs."""
        return self.worker is not None

    def _model_chosen(self, *_) -> None:
        """Take K and N from the model's sampling config (bundle.json only: no weights are
        loaded in the GUI thread) when a model folder is chosen."""
        folder = Path(self.model_folder.value)
        try:
            bundle = read_bundle(folder)
        except UserError as err:
            self.status.value = str(err)
            return
        self.samples.value, self.steps.value = bundle.sample.samples, bundle.sample.steps
        self.status.value = f"model: {folder.name} (×{bundle.scale}, {bundle.task.title})"

    def run(self, *_) -> None:
        """Start the prediction of the chosen layer in a worker thread."""
        layer = self.image.value
        if self.busy:
            return
        if layer is None:
            self._fail("choose an image layer first")
            return
        folder, device = Path(self.model_folder.value), self.device.value
        options = (int(self.samples.value), int(self.steps.value), int(self.seed.value))
        self.run_button.enabled = False
        self.progress.value, self.status.value = 0, f"predicting {layer.name}…"
        self.worker = create_worker(self._predict, layer.data, layer.rgb, folder, device, *options,
                                    _connect={"returned": lambda res: self._done(layer, res),
                                              "errored": self._errored})

    def _predict(self, data, rgb, folder, device, samples, steps, seed):  # in the worker thread
        predictor = load(folder, device)
        arr, axes = layer_as_model_input(data, rgb, predictor)
        res = predict_layer(predictor, arr, axes, samples, steps, seed, progress=self._signals.step.emit)
        return res, predictor.scale, axes

    def _on_progress(self, done: int, total: int) -> None:
        self.progress.max = max(total, 1)
        self.progress.value = done

    def _done(self, layer: Image, result) -> None:
        try:
            self._add_outputs(layer, *result)
        except Exception as err:  # never leave the widget disabled
            self._fail(f"the prediction finished but its layers could not be added: {err}")
        finally:
            self._finish()

    def _add_outputs(self, layer: Image, res: Prediction, factor: int, axes: str) -> None:
        spatial_in, translate_in = layer.scale[-2:], layer.translate[-2:]  # an RGB axis has no scale
        if res.mean.ndim == 3 and axes == "ZYX":  # planes keep their Z scale
            spatial_in = (layer.scale[0], *spatial_in)
            translate_in = (layer.translate[0], *translate_in)
        scale, translate = output_geometry(spatial_in, translate_in, factor)
        if res.mean.ndim == 3 and axes == "CYX":  # several output channels
            scale, translate = (1.0, *scale), (0.0, *translate)
        units = {"units": layer.units[-len(scale):]} if len(layer.units) >= len(scale) else {}
        common = {"scale": scale, "translate": translate, **units}
        self._viewer.add_image(res.mean, name=f"{layer.name} mean", colormap="gray", **common)
        self._viewer.add_image(res.std, name=f"{layer.name} std", colormap="magma", blending="additive",
                               contrast_limits=std_display_range(res.std), **common)
        what = "mean and calibrated std" if res.std_raw is not None else "mean and std (not calibrated)"
        if res.lower is not None:  # the conformal interval of the bundle's calibration, hidden
            for bound, data in (("lower", res.lower), ("upper", res.upper)):
                self._viewer.add_image(data, name=f"{layer.name} {bound}", colormap="gray", visible=False,
                                       **common)
            what += ", interval lower/upper (hidden)"
        self.progress.value = self.progress.max
        self.status.value = f"{layer.name}: {what} added (output pixel = input / {factor})"

    def _errored(self, err: Exception) -> None:
        self._fail(str(err) if isinstance(err, UserError) else f"{type(err).__name__}: {err}")
        self._finish()

    def _fail(self, message: str) -> None:
        self.status.value = message
        show_error(message)

    def _finish(self) -> None:
        self.worker = None
        self.run_button.enabled = True
