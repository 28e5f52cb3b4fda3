"""Errors a user can cause. The CLI prints them as one sentence and exits non-zero."""

import re

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


#: how pydantic tags the members of a union field in an error's location (``bool``,
#: ``constrained-float``, ``literal['tie','tie+wiener']``, ...)
_UNION_MEMBER = re.compile(r"^(bool|int|float|str|none|constrained-[a-z]+|(literal|list|tuple|dict)\[.*\])$")


def first_error(err, source: str) -> str:
    """One sentence for a pydantic ``ValidationError``: ``source: where: what``. A value that
    fits none of a union field's types gets one sentence naming every accepted form."""
    errors = [(tuple(str(p) for p in x["loc"]), x) for x in err.errors()]
    loc, e = errors[0]
    if len(loc) > 1 and _UNION_MEMBER.match(loc[-1]):
        forms = [x["msg"].split(", unable")[0] for where, x in errors
                 if where[:-1] == loc[:-1] and _UNION_MEMBER.match(where[-1])]
        return f"{source}: {'.'.join(loc[:-1])}: got {e['input']!r}; {' or '.join(forms)}"
    return f"{source}: {'.'.join(loc) or '(top level)'}: {e['msg']}"
