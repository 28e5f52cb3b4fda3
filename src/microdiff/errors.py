"""Errors a user can cause. The CLI prints them as one sentence and exits non-zero."""

import numpy as np


class UserError(Exception):
    """Base class for mistakes in input, configuration or files (not bugs)."""


class ConfigError(UserError):
    """A configuration file or override is invalid."""


class ShapeError(UserError):
    """Input arrays have incompatible shapes."""


class PixelValueError(UserError):
    """An image holds values that cannot be used (NaN or infinite pixels)."""


def check_finite(image, name: str = "") -> None:
    """Refuse an array with NaN or infinite pixels, saying how many and what to do."""
    bad = int(np.size(image) - np.count_nonzero(np.isfinite(image)))
    if bad:
        where = f"{name}: " if name else ""
        raise PixelValueError(f"{where}{bad} of {np.size(image)} pixels are NaN or infinite; "
                              "replace them (e.g. with the image's median) before using it")
