"""Presets and YAML config files: where the presets live, and a file's mapping with its
``base:`` chain resolved (validation is :mod:`microdiff.config`'s)."""

from __future__ import annotations

from pathlib import Path

import yaml

from .errors import ConfigError

PRESET_DIR = Path(__file__).parent / "configs"


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def _resolve_path(path_or_preset: str | Path) -> Path:
    path = Path(path_or_preset)
    if path.is_file():
        return path
    preset = PRESET_DIR / f"{path_or_preset}.yaml"
    if not preset.exists():
        raise ConfigError(
            f"no config file {str(path_or_preset)!r} and no preset of that name "
            f"(presets: {', '.join(preset_names())})"
        )
    return preset


def _merge(base: dict, over: dict) -> dict:
    """``over`` on top of ``base``, mappings merged key by key, everything else replaced."""
    out = dict(base)
    for key, value in over.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) \
            else value
    return out


def read_yaml(path_or_preset: str | Path, seen: tuple[Path, ...] = ()) -> tuple[dict, Path]:
    """The file's mapping, with ``base: PRESET_OR_FILE`` resolved (relative to the file)."""
    path = _resolve_path(path_or_preset)
    if path.resolve() in seen:
        raise ConfigError(f"{path}: 'base' refers back to itself ({' → '.join(p.name for p in seen)})")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err.__class__.__name__})") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot be read as a UTF-8 text file ({err.__class__.__name__})") from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    data = dict(data or {})
    base = data.pop("base", None)
    if base is None:
        return data, path
    if not isinstance(base, str):
        raise ConfigError(f"{path}: 'base' must name a preset or a YAML file, got {base!r}")
    relative = path.parent / base
    base_data, _ = read_yaml(relative if relative.is_file() else base, (*seen, path.resolve()))
    return _merge(base_data, data), path
