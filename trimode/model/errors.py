"""The error every checkpoint reader raises for a file it cannot load."""


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded; the message names the file and what was expected."""
