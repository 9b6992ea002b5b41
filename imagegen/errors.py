"""User-facing errors: the CLI prints their message on one line and exits with code 2 (1 for
``WriteError``)."""


class ImagegenError(Exception):
    """A problem with the user's input (file, config, argument) that the user can fix."""


class WriteError(ImagegenError):
    """A file could not be written although its path was checked: the disk is full, a size limit is hit,
    the file system failed. Not the input's fault: the CLI exits with code 1."""


class DataError(ImagegenError):
    """A dataset or image file is absent, unreadable or of the wrong kind."""


class ConfigError(ImagegenError):
    """A config file or `--set` override names an unknown key or holds a bad value."""


class NonFiniteError(ImagegenError):
    """A model produced NaN or infinite logits: its weights are broken (a diverged run) or overflow."""
