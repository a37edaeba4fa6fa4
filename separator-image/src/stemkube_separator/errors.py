"""Failures that the separator knows how to explain, each tied to its exit code."""

from stemkube_separator import exitcodes


class SeparatorError(Exception):
    """A failure with a reason a person understands (the exception's message)."""

    exit_code: int = exitcodes.CRASH


class UsageError(SeparatorError):
    exit_code = exitcodes.USAGE


class InvalidInputError(SeparatorError):
    """Retrying cannot help: the input or the request itself is the problem."""

    exit_code = exitcodes.INVALID_INPUT


class TransientError(SeparatorError):
    """Storage, network or device trouble: a later try may succeed."""

    exit_code = exitcodes.TRANSIENT


class ModelNotFoundError(SeparatorError):
    """The model named is not in the weights folder (or the hub): a deployment's configuration
    problem, not the song's. Never retried."""

    exit_code = exitcodes.MODEL_NOT_FOUND
