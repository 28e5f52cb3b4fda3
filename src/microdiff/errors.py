"""Errors a user can cause. The CLI prints them as one sentence and exits non-zero."""


class UserError(Exception):
    """Base class for mistakes in input, configuration or files (not bugs)."""


class ConfigError(UserError):
    """A configuration file or override is invalid."""


class ShapeError(UserError):
    """Input arrays have incompatible shapes."""
