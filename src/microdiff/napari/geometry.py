"""Where a model's output lies in napari's world coordinates (no Qt needed).

Output pixel j of a model with scale factor s covers input coordinates
[j/s, (j+1)/s): its centre is at (j + 0.5)/s − 0.5 input pixels, the convention of the
bicubic upsampling the model conditions on (align_corners=False). In world units, with
the input layer's ``scale`` and ``translate`` (per axis, pixel centres):
``out_scale = scale / s`` and ``out_translate = translate + (0.5/s − 0.5) · scale``.
"""

from __future__ import annotations

from collections.abc import Sequence


def output_geometry(scale: Sequence[float], translate: Sequence[float], factor: int, spatial: int = 2
                    ) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(scale, translate) of the output layer: the last ``spatial`` axes shrink by
    ``factor``, the others (Z planes) stay as they are."""
    n = len(scale)
    out_scale = tuple(float(v) / factor if i >= n - spatial else float(v) for i, v in enumerate(scale))
    out_translate = tuple(
        float(t) + (0.5 / factor - 0.5) * float(v) if i >= n - spatial else float(t)
        for i, (t, v) in enumerate(zip(translate, scale, strict=True)))
    return out_scale, out_translate
