"""Exceptions mechjax raises. Each message names what was wrong and what is valid."""


class MechjaxError(Exception):
    """Base class of every mechjax error."""


class CheckpointError(MechjaxError, ValueError):
    """A checkpoint file is missing, truncated, corrupted or of an unsupported kind."""


class FetchError(MechjaxError, RuntimeError):
    """A named model could not be fetched (offline, package missing, checksum mismatch)."""


class SiteError(MechjaxError, KeyError):
    """An unknown site name, or a site that does not fit the request."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class InterventionError(MechjaxError, ValueError):
    """An intervention whose values do not fit the site it is applied to."""


class InputError(MechjaxError, ValueError):
    """Bad tokens or batch inputs (dtype, rank, ids outside the vocabulary)."""
