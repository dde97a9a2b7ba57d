"""Errors a user can act on.

Every layer raises :class:`VisionloopError` (or a subclass) for problems caused by input or
environment; the CLI prints its message as one line and exits non-zero, the server maps it to
a 4xx JSON body. Anything else is a bug and keeps its traceback (shown with ``--debug``).
"""

from __future__ import annotations


class VisionloopError(Exception):
    """A problem the user can fix; ``str(exc)`` is a complete one-line explanation."""

    exit_code = 1


class NotFoundError(VisionloopError):
    """A dataset, model, version or file that was named does not exist."""


class ValidationError(VisionloopError):
    """Input data is malformed (bad label, bad image, unsafe archive, bad parameter)."""


class ConflictError(VisionloopError):
    """The operation would contradict existing state (e.g. a gate refused a promotion)."""
