"""Axes at the I/O boundary: images as ``YX`` / ``CYX`` (or ``ZYX`` planes), arrays as
``[C, H, W]`` for the model (DESIGN: axes strings outside, NCHW inside)."""

from __future__ import annotations

import numpy as np

from ..errors import ShapeError
from .io import Image

STACK_MODES = ("slices", "mean")


def as_chw(data: np.ndarray, axes: str) -> np.ndarray:
    """float32 ``[C, H, W]`` from ``YX`` (one channel) or ``CYX`` data."""
    if axes == "YX" and np.ndim(data) == 2:
        return np.asarray(data, np.float32)[None]
    if axes == "CYX" and np.ndim(data) == 3:
        return np.asarray(data, np.float32)
    raise ShapeError(f"image of shape {np.shape(data)} with axes {axes!r}: use 'YX' or 'CYX'")


def image_chw(img: Image) -> np.ndarray:
    """A training image as float32 ``[C, H, W]``: ``YX``, ``CYX``, ``YXC`` or a single-plane ``ZYX``."""
    data, axes = img.data, img.axes
    if axes == "ZYX" and data.shape[0] == 1:
        return as_chw(data, "CYX")
    if axes == "YXC":
        return as_chw(np.moveaxis(data, -1, 0), "CYX")
    if axes in ("YX", "CYX"):
        return as_chw(data, axes)
    raise ShapeError(f"cannot use an image with axes {axes!r} and shape {data.shape} as a 2-D pair")


def as_2d(img: Image, stack: str | None = None) -> tuple[np.ndarray, str]:
    """The image as ``YX`` or ``CYX`` data, or ``ZYX`` planes to predict one by one.

    A single-plane ``ZYX`` stack is squeezed; ``YXC`` (RGB) becomes ``CYX``, as in training
    (:func:`image_chw`). A deeper ``ZYX`` stack needs ``stack``: ``"slices"`` keeps the planes
    (``ZYX``: each predicted on its own), ``"mean"`` averages them (raw SIM frames → a
    widefield image)."""
    data, axes = img.data, img.axes
    if axes == "ZYX" and data.shape[0] == 1:
        return data[0], "YX"
    if axes == "YXC":
        return np.moveaxis(data, -1, 0), "CYX"
    if axes in ("YX", "CYX"):
        return data, axes
    if axes == "ZYX" and stack == "slices":
        return data, "ZYX"
    if axes == "ZYX" and stack == "mean":
        return data.astype(np.float32).mean(axis=0), "YX"
    hint = ("use --stack slices to predict each plane, or --stack mean to predict their mean "
            "(raw SIM frames); if the planes are channels (a defocus pair), save them with axes CYX "
            "(an ImageJ hyperstack's channels)" if axes == "ZYX"
            else "save it as one channel (YX) or channels first (CYX)")
    raise ShapeError(f"expected a 2-D image (YX or CYX), got axes {axes!r} with shape {data.shape}; {hint}")
