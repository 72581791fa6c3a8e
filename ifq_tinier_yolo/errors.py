"""The project's exception types. The CLI turns each into a one-line `error: ...` message."""


class IfqError(Exception):
    """Base class of every error a user can cause."""


class DataError(IfqError, ValueError):
    """A dataset or annotation file is missing or malformed (message names file and line)."""


class ImageError(IfqError, OSError):
    """An image file is missing, empty, truncated or not an image."""


class ModelFileError(IfqError, ValueError):
    """A model or checkpoint file is truncated, corrupted, foreign or of an unknown version."""


class ConversionError(IfqError, ValueError):
    """A conversion pass found a precondition that does not hold (message names the layer)."""


class ConfigError(IfqError, ValueError):
    """A configuration value or command-line option is invalid."""


class NotImplementedYet(IfqError, RuntimeError):
    """A subcommand that exists in the contract but is not built yet."""
