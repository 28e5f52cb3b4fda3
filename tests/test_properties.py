"""Property-based tests (hypothesis): normalisation, tiling and the image readers/writers
on random shapes, dtypes and values."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from microdiff.data.io import Image, read_image, write_image
from microdiff.data.normalize import Normalizer
from microdiff.data.tiling import apply_tiled

SETTINGS = settings(max_examples=40, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


@st.composite
def images(draw, dtypes=(np.uint8, np.uint16, np.int16, np.int32, np.float32, np.float64),
           max_side: int = 24) -> np.ndarray:
    """A 2-D image of a random dtype and shape with values over the dtype's range."""
    dtype = np.dtype(draw(st.sampled_from(dtypes)))
    shape = (draw(st.integers(1, max_side)), draw(st.integers(1, max_side)))
    if dtype.kind == "f":
        elements = st.floats(-1e6, 1e6, allow_nan=False, width=32)
    else:
        info = np.iinfo(dtype)
        elements = st.integers(int(info.min), int(info.max))
    return draw(arrays(dtype, shape, elements=elements))


@SETTINGS
@given(images())
def test_normalisation_is_finite_and_inverts_exactly(image: np.ndarray) -> None:
    norm = Normalizer.percentiles(image)
    z = norm.normalize(image)
    assert z.dtype == np.float32 and np.isfinite(z).all()  # constants included: no 0/0
    back = norm.denormalize(z).astype(np.float64)
    data = image.astype(np.float64)
    span = norm.span[0]
    tol = 1e-6 * (np.abs(data - norm.offset[0]).max() + span)  # float32 rounding of z
    assert np.abs(back - data).max() <= tol
    assert np.allclose(norm.denormalize_spread(np.ones_like(z)), span, rtol=1e-6)


@SETTINGS
@given(h=st.integers(1, 90), w=st.integers(1, 90), tile=st.integers(8, 64), data=st.data(),
       batch=st.integers(1, 4), channels=st.integers(1, 3))
def test_tiling_a_pixelwise_function_equals_applying_it_whole(h, w, tile, data, batch, channels) -> None:
    """Blend weights sum to one everywhere: any tile size, overlap, margin and batch."""
    overlap = data.draw(st.integers(0, tile - 1))
    image = torch.from_numpy(np.random.default_rng(h * 1000 + w).random((channels, h, w), np.float32))
    out = apply_tiled(lambda t: 2 * t + 1, image, tile=tile, overlap=overlap, batch=batch)
    assert out.shape == (channels, h, w)
    torch.testing.assert_close(out, 2 * image + 1, rtol=0, atol=1e-5)


@SETTINGS
@given(image=images(dtypes=(np.uint8, np.uint16, np.float32)),
       pixel=st.none() | st.floats(0.005, 10.0), suffix=st.sampled_from([".tif", ".ome.tif", ".mrc"]))
def test_writing_then_reading_keeps_values_dtype_and_pixel_size(image, pixel, suffix,
                                                                 tmp_path_factory) -> None:
    path = tmp_path_factory.mktemp("io") / f"a{suffix}"
    write_image(path, Image(image, "YX", pixel))
    back = read_image(path)
    data = back.data[0] if back.data.ndim == 3 and back.data.shape[0] == 1 else back.data
    if suffix == ".mrc":  # MRC has no uint8 mode: mrcfile widens it to uint16, values kept
        assert np.can_cast(image.dtype, data.dtype, "safe")
    else:
        assert data.dtype == image.dtype
    np.testing.assert_array_equal(data, image)
    if pixel is None:
        assert back.pixel_size is None or back.pixel_size == 1.0
    else:
        assert back.pixel_size is not None and abs(back.pixel_size - pixel) <= 1e-4 * pixel
