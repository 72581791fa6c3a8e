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


class OutputError(IfqError, OSError):
    """An output file or folder cannot be written (a file in the way, no permission, a full disk)."""


class TrainingError(IfqError, RuntimeError):
    """Training cannot go on (the loss became NaN or infinite)."""
