"""Read and write microscopy images with their axes and pixel size.

One function per format; :func:`read_image` / :func:`write_image` dispatch on the file
suffix. Pixel sizes are in micrometres per pixel (Y/X); ``None`` when unknown. Writers
are atomic (temporary file + rename) and never overwrite unless ``overwrite=True``.

- TIFF (``.tif``/``.tiff``): ImageJ hyperstacks (Fiji shows the scale bar);
  OME-TIFF (``.ome.tif``/``.ome.tiff``) with PhysicalSizeX/Y.
- MRC (``.mrc``): read permissively (BioSR files lack the "MAP " id and machine stamp).
  The MRC standard stores Å; BioSR stores µm in the same field. Voxel sizes below 1 are
  taken as µm, others as Å. Written in Å.
- PNG/JPEG: 8- or 16-bit grey (PNG) / 8-bit (JPEG); no pixel size.
- The authors' ``.npz`` with ``x``/``y`` arrays: :func:`read_npz_pairs`.
- BioSR cells: :func:`read_biosr_cell` (widefield = mean of the raw SIM frames).
"""

from __future__ import annotations

import io
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile

from ..errors import UserError

ANGSTROM_PER_UM = 1e4


class ImageReadError(UserError):
    """A file could not be read as an image."""


class ImageWriteError(UserError):
    """An image could not be written (e.g. the file exists)."""


@dataclass
class Image:
    """An image and what is known about it.

    data: the array, axes in ``axes`` order (e.g. ``"YX"``, ``"CYX"``, ``"ZYX"``).
    pixel_size: µm per pixel along Y and X (square pixels), or None.
    z_spacing: µm between Z planes (a Z axis that is a focal series), or None.
    labels: one name per plane of the first non-YX axis (e.g. ``"sample 1"``), or None;
    ImageJ shows them as slice labels.
    """

    data: np.ndarray
    axes: str
    pixel_size: float | None = None
    z_spacing: float | None = None
    labels: list[str] | None = None

    def __post_init__(self) -> None:
        if len(self.axes) != self.data.ndim:
            raise ValueError(f"axes {self.axes!r} do not match an array of {self.data.ndim} dims")


def atomic_write_bytes(path: Path, payload: bytes, overwrite: bool = False) -> None:
    """Write ``payload`` to ``path`` via a temporary file and a rename (never half-written);
    refuses to replace an existing file unless ``overwrite``."""
    if path.exists() and not overwrite:
        raise ImageWriteError(f"{path} exists; refusing to overwrite it")
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as fh:
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as err:  # a full disk, a read-only folder: leave no partial file behind
        tmp.unlink(missing_ok=True)
        raise ImageWriteError(f"{path}: could not be written ({err.strerror or err}); "
                              "nothing was changed there") from None


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for s in (".ome.tiff", ".ome.tif"):
        if name.endswith(s):
            return s
    return path.suffix.lower()


def image_stem(path: str | Path) -> str:
    """The file name without its image suffix (``.ome.tif`` counts as one; another suffix
    stays): ``cell_0.5um.tif`` → ``cell_0.5um``, ``a.ome.tif`` → ``a``, ``cell_0.5um`` →
    ``cell_0.5um``; what outputs and pairs are named by."""
    path = Path(path)
    suffix = _suffix(path)
    return path.name[: len(path.name) - len(suffix)] if suffix in _READERS else path.name


def shared_stem(paths: list[Path]) -> tuple[Path, Path] | None:
    """The first two different ``paths`` with one :func:`image_stem` (their outputs or pairs
    would be confused), or None."""
    seen: dict[str, Path] = {}
    for p in paths:
        other = seen.setdefault(image_stem(p), p)
        if other != p:
            return other, p
    return None


# --- TIFF -------------------------------------------------------------------------------
def read_tiff(path: str | Path) -> Image:
    """TIFF / ImageJ TIFF / OME-TIFF with axes and pixel size (µm)."""
    path = Path(path)
    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            data, axes = series.asarray(), series.axes
            page = tif.pages[0]
            pixel = z_spacing = None
            if tif.ome_metadata:
                m = re.search(r'PhysicalSizeX="([0-9.eE+-]+)"', tif.ome_metadata)
                unit = re.search(r'PhysicalSizeXUnit="([^"]+)"', tif.ome_metadata)
                if m:
                    pixel = float(m.group(1)) * _unit_to_um(unit.group(1) if unit else "µm")
            elif "XResolution" in page.tags:
                num, den = page.tags["XResolution"].value
                unit = (tif.imagej_metadata or {}).get("unit", "")
                if num and den and unit:
                    pixel = den / num * _unit_to_um(unit)
                spacing = (tif.imagej_metadata or {}).get("spacing")
                if spacing and unit:
                    z_spacing = float(spacing) * _unit_to_um(unit)
    except (OSError, tifffile.TiffFileError, ValueError) as err:
        raise ImageReadError(f"{path}: not a readable TIFF ({err})") from None
    axes = axes.replace("S", "C").replace("I", "Z").replace("Q", "Z")
    return Image(data, axes, pixel, z_spacing if "Z" in axes else None)


def _unit_to_um(unit: str) -> float:
    u = unit.strip().lower().replace("\\u00b5", "µ")
    table = {"µm": 1.0, "um": 1.0, "micron": 1.0, "microns": 1.0, "micrometer": 1.0,
             "nm": 1e-3, "nanometer": 1e-3, "mm": 1e3, "å": 1e-4, "angstrom": 1e-4}
    if u not in table:
        raise ImageReadError(f"unknown length unit {unit!r} in the file's metadata")
    return table[u]


def write_tiff(path: str | Path, image: Image, overwrite: bool = False) -> None:
    """float32/uint16/uint8 TIFF: OME-TIFF for ``.ome.tif``, else an ImageJ hyperstack
    with calibration in µm (Fiji shows the scale bar; ``z_spacing`` becomes the voxel
    depth, ``labels`` the slice labels)."""
    path = Path(path)
    buf = io.BytesIO()
    data = image.data
    if _suffix(path).startswith(".ome"):
        meta: dict = {"axes": image.axes}
        if image.pixel_size:
            meta |= {"PhysicalSizeX": image.pixel_size, "PhysicalSizeY": image.pixel_size,
                     "PhysicalSizeXUnit": "µm", "PhysicalSizeYUnit": "µm"}
        tifffile.imwrite(buf, data, ome=True, metadata=meta)
    else:
        if data.dtype == np.float64:
            data = data.astype(np.float32)
        meta = {"axes": image.axes}
        kwargs: dict = {}
        if image.pixel_size:
            meta["unit"] = "um"
            kwargs["resolution"] = (1.0 / image.pixel_size, 1.0 / image.pixel_size)
            if image.z_spacing and "Z" in image.axes:
                meta["spacing"] = image.z_spacing
        if image.labels:
            planes = int(np.prod(data.shape[:-2]))
            if len(image.labels) != planes:
                raise ValueError(f"{len(image.labels)} labels for {planes} planes")
            meta["Labels"] = list(image.labels)
        tifffile.imwrite(buf, data, imagej=True, metadata=meta, **kwargs)
    atomic_write_bytes(path, buf.getvalue(), overwrite)


# --- MRC --------------------------------------------------------------------------------
def read_mrc(path: str | Path) -> Image:
    """MRC read permissively; axes ``ZYX`` (or ``YX``), pixel size in µm."""
    import mrcfile

    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # BioSR: no "MAP ", no stamp
            with mrcfile.open(path, permissive=True) as mrc:
                if mrc.data is None:
                    raise ValueError("no data block")
                data = np.array(mrc.data)
                vx, vz = float(mrc.voxel_size.x), float(mrc.voxel_size.z)
    except (OSError, ValueError) as err:
        raise ImageReadError(f"{path}: not a readable MRC file ({err})") from None
    pixel = None if vx <= 0 else (vx if vx < 1.0 else vx / ANGSTROM_PER_UM)
    z = None if vz <= 0 or data.ndim != 3 else (vz if vz < 1.0 else vz / ANGSTROM_PER_UM)
    return Image(data, "ZYX" if data.ndim == 3 else "YX", pixel, z)


def write_mrc(path: str | Path, image: Image, overwrite: bool = False) -> None:
    """MRC with the voxel size in Å (the standard's unit)."""
    import mrcfile

    path = Path(path)
    if path.exists() and not overwrite:
        raise ImageWriteError(f"{path} exists; refusing to overwrite it")
    data = image.data
    if data.dtype == np.float64:
        data = data.astype(np.float32)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with mrcfile.new(tmp, overwrite=True) as mrc:
            mrc.set_data(data)
            if image.pixel_size:
                a = image.pixel_size * ANGSTROM_PER_UM
                z = (image.z_spacing or image.pixel_size) * ANGSTROM_PER_UM
                mrc.voxel_size = (a, a, z)
        os.replace(tmp, path)
    except OSError as err:  # as atomic_write_bytes: no partial file
        tmp.unlink(missing_ok=True)
        raise ImageWriteError(f"{path}: could not be written ({err.strerror or err}); "
                              "nothing was changed there") from None


# --- PNG / JPEG -------------------------------------------------------------------------
def read_png(path: str | Path) -> Image:
    """8/16-bit PNG or JPEG; colour images come back as ``YXC``."""
    import imageio.v3 as iio

    path = Path(path)
    try:
        data = np.asarray(iio.imread(path))
    except (OSError, ValueError) as err:
        raise ImageReadError(f"{path}: not a readable PNG/JPEG ({err})") from None
    return Image(data, "YX" if data.ndim == 2 else "YXC")


def write_png(path: str | Path, image: Image, overwrite: bool = False) -> None:
    """uint8 or uint16 grey PNG (uint8 JPEG for ``.jpg``/``.jpeg``)."""
    import imageio.v3 as iio

    path = Path(path)
    data = image.data
    jpeg = _suffix(path) in (".jpg", ".jpeg")
    allowed = (np.uint8,) if jpeg else (np.uint8, np.uint16)
    if data.dtype not in allowed:
        raise ImageWriteError(f"{path.name}: {data.dtype} cannot be stored; convert to "
                              f"{' or '.join(np.dtype(a).name for a in allowed)} first")
    payload = iio.imwrite("<bytes>", data, extension=_suffix(path))
    atomic_write_bytes(path, payload, overwrite)


# --- dispatch ---------------------------------------------------------------------------
_READERS = {".tif": read_tiff, ".tiff": read_tiff, ".ome.tif": read_tiff, ".ome.tiff": read_tiff,
            ".mrc": read_mrc, ".png": read_png, ".jpg": read_png, ".jpeg": read_png}
#: file suffixes (as ``Path.suffix`` gives them) that :func:`read_image` reads
IMAGE_SUFFIXES = tuple(k for k in _READERS if k.count(".") == 1)
_WRITERS = {".tif": write_tiff, ".tiff": write_tiff, ".ome.tif": write_tiff,
            ".ome.tiff": write_tiff, ".mrc": write_mrc, ".png": write_png, ".jpg": write_png,
            ".jpeg": write_png}


def read_image(path: str | Path) -> Image:
    """Read any supported image file (by suffix)."""
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: no such file")
    reader = _READERS.get(_suffix(path))
    if reader is None:
        raise ImageReadError(f"{path}: unsupported file type (use {', '.join(sorted(_READERS))})")
    return reader(path)


def write_image(path: str | Path, image: Image, overwrite: bool = False) -> None:
    """Write an image in the format its suffix names (atomically)."""
    writer = _WRITERS.get(_suffix(Path(path)))
    if writer is None:
        raise ImageWriteError(f"{path}: unsupported file type (use {', '.join(sorted(_WRITERS))})")
    writer(path, image, overwrite=overwrite)


# --- paired layouts ---------------------------------------------------------------------
def read_npz_pairs(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """The authors' ``.npz``: arrays ``x`` (condition) and ``y`` (target)."""
    try:
        with np.load(path) as f:
            if "x" not in f or "y" not in f:
                raise ImageReadError(f"{path}: needs arrays 'x' and 'y', has {sorted(f.files)}")
            return f["x"], f["y"]
    except (OSError, ValueError) as err:
        raise ImageReadError(f"{path}: not a readable .npz ({err})") from None


def write_npz_pairs(path: str | Path, x: np.ndarray, y: np.ndarray, overwrite: bool = False) -> None:
    buf = io.BytesIO()
    np.savez(buf, x=x, y=y)
    atomic_write_bytes(Path(path), buf.getvalue(), overwrite)


def widefield_from_raw_sim(raw: Image) -> Image:
    """Widefield image = mean over the raw SIM frames (BioSR's convention), float32 ``YX``."""
    if raw.data.ndim != 3:
        raise ImageReadError(f"raw SIM data must be a stack of frames, got axes {raw.axes!r}")
    return Image(raw.data.astype(np.float32).mean(axis=0), "YX", raw.pixel_size)


def read_biosr_cell(folder: str | Path, level: int) -> tuple[Image, Image]:
    """(widefield, SIM target) of one BioSR cell folder: ``RawSIMData_level_XX.mrc`` and
    ``SIM_gt.mrc``. The widefield is the mean of the raw frames."""
    folder = Path(folder)
    raw_path = folder / f"RawSIMData_level_{level:02d}.mrc"
    gt_path = folder / "SIM_gt.mrc"
    for p in (raw_path, gt_path):
        if not p.is_file():
            raise ImageReadError(f"{folder}: missing {p.name} (BioSR cell layout)")
    target = read_mrc(gt_path)
    if target.data.ndim == 3 and target.data.shape[0] == 1:
        target = Image(target.data[0], "YX", target.pixel_size)
    return widefield_from_raw_sim(read_mrc(raw_path)), target
