"""napari readers: a microdiff model folder (opens the prediction widget with that model)
and MRC files (BioSR raw SIM stacks and SIM images, with their pixel size in µm)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..data.io import read_mrc

LAST_MODEL: list[Path] = []
"""The model folder most recently opened in napari; new prediction widgets start with it."""


def get_reader(path: str | list[str]) -> Callable[[str | list[str]], list[tuple]] | None:
    """The reader for ``path``, or None when it is neither a model folder nor an MRC file."""
    first = Path(path[0] if isinstance(path, list) else path)
    if first.is_dir() and (first / "bundle.json").is_file():
        return read_model_folder
    if first.suffix.lower() == ".mrc" and first.is_file():
        return read_mrc_files
    return None


def read_mrc_files(path: str | list[str]) -> list[tuple]:
    """One image layer per MRC file, scaled in µm (Z spacing for stacks when known)."""
    layers = []
    for p in [path] if isinstance(path, str) else path:
        img = read_mrc(p)
        px = img.pixel_size or 1.0
        scale = (px, px) if img.data.ndim == 2 else (img.z_spacing or 1.0, px, px)
        meta = {"pixel_size_um": img.pixel_size, "source": str(p)}
        layers.append((img.data, {"name": Path(p).stem, "scale": scale, "metadata": meta}, "image"))
    return layers


def read_model_folder(path: str | list[str]) -> list[tuple]:
    """Remember the model and open the prediction widget with it; adds no layer."""
    folder = Path(path[0] if isinstance(path, list) else path)
    LAST_MODEL[:] = [folder]
    try:
        import napari

        viewer = napari.current_viewer()
        if viewer is not None and getattr(viewer, "window", None) is not None:
            _, widget = viewer.window.add_plugin_dock_widget("microdiff", "Predict (CVDM)")
            widget.model_folder.value = folder
    except (ImportError, KeyError, RuntimeError):  # no window (headless): the next widget gets it
        pass
    return [(None,)]
