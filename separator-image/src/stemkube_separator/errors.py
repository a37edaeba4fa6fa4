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


class SourceUnreachableError(SeparatorError):
    """A source URL that cannot be fetched and will not be on another try (DNS name unknown,
    connection refused, HTTP 4xx, too many redirects)."""

    exit_code = exitcodes.SOURCE_UNREACHABLE


class SourceUnavailableError(SeparatorError):
    """A source URL that did not answer in time, or answered 5xx or 429: retried."""

    exit_code = exitcodes.SOURCE_UNAVAILABLE


class SourceTooLargeError(SeparatorError):
    exit_code = exitcodes.SOURCE_TOO_LARGE


class NotAudioError(SeparatorError):
    """A source URL's answer that is no audio file (an HTML page...)."""

    exit_code = exitcodes.NOT_AUDIO


class SourceForbiddenError(SeparatorError):
    """A source URL whose host (or a redirect's) is an address the service may not call."""

    exit_code = exitcodes.SOURCE_FORBIDDEN
