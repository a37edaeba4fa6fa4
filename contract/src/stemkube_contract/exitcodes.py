"""The separator's exit codes, and the one table of what each means for its job: the reason a
user sees, the message when the separator said nothing, and whether another try may help.
The operator (pod exit codes) and local mode (worker processes) both read it."""

from dataclasses import dataclass
from typing import Final

OK: Final = 0
# An unexpected crash (a bug): Python's own code for an uncaught exception.
CRASH: Final = 1
# argparse's own code for a malformed command line (also: a --model-repo that does not exist).
USAGE: Final = 2
# The input or the request can never succeed: not audio, empty, truncated beyond recovery,
# zero duration, longer than the limit, a stem the model lacks. Never retried.
INVALID_INPUT: Final = 3
# The model named is in neither the weights folder nor the hub. Never retried.
MODEL_NOT_FOUND: Final = 4
# Storage unreachable, S3 errors, network, no CUDA device where one was required. Retried.
TRANSIENT: Final = 75  # EX_TEMPFAIL of sysexits.h
# A source URL's fetch (``stemkube_contract.urls``; jobs from a URL only):
# - the source cannot be had and will not be on another try: its name does not resolve, the
#   connection is refused, an HTTP 4xx, too many redirects, a redirect to another scheme.
SOURCE_UNREACHABLE: Final = 5
# - it is larger than MAX_FILE_SIZE (said by Content-Length, or counted while it streams).
SOURCE_TOO_LARGE: Final = 6
# - it is not audio (an HTML page, a JSON or text answer), told from its type or first bytes.
NOT_AUDIO: Final = 7
# - its host, or a redirect's, is or resolves to an address the service may not call
#   (``stemkube_contract.addresses``: loopback, private, link-local, the cluster's ranges...).
SOURCE_FORBIDDEN: Final = 8
# - a timeout (connect, read, the overall deadline), an HTTP 5xx or 429, a temporary DNS
#   failure, a connection reset: another try may succeed. Retried like TRANSIENT.
SOURCE_UNAVAILABLE: Final = 76
# SIGTERM (128 + 15): the pod was deleted while it ran: Kueue preempting the separation (it
# suspends the Job), a drain, a person. Never the separation's fault: the Job does not count
# it against its retries, and the separation runs again where its Job goes on.
TERMINATED: Final = 143
TERMINATED_MESSAGE: Final = "terminated (SIGTERM) before the separation finished"


@dataclass(frozen=True)
class Meaning:
    reason: str  # CamelCase, as on the SeparationJob's status
    default_message: str  # when the separator left no message
    retryable: bool


MEANINGS: Final[dict[int, Meaning]] = {
    USAGE: Meaning("InvalidArguments", "the separator refused its arguments", False),
    INVALID_INPUT: Meaning("InvalidInput", "the input file could not be read as audio", False),
    MODEL_NOT_FOUND: Meaning(
        "ModelNotFound", "the model's weights are not in the model folder or the hub", False
    ),
    TRANSIENT: Meaning("TransientError", "storage or network", True),
    SOURCE_UNREACHABLE: Meaning("SourceUnreachable", "the source URL could not be fetched", False),
    SOURCE_TOO_LARGE: Meaning("SourceTooLarge", "the source URL's file is over the limit", False),
    NOT_AUDIO: Meaning("NotAudio", "the source URL's answer is not audio", False),
    SOURCE_FORBIDDEN: Meaning(
        "SourceForbidden", "the source URL's address may not be fetched", False
    ),
    SOURCE_UNAVAILABLE: Meaning(
        "SourceUnreachable", "the source URL did not answer in time (or answered 5xx)", True
    ),
}
# Anything else (a crash, a signal): worth another try, then a bug to report.
OTHER = Meaning("SeparatorError", "", True)
# The codes a Job's podFailurePolicy fails at once.
FINAL_CODES: Final = tuple(sorted(c for c, m in MEANINGS.items() if not m.retryable))


def meaning(code: int) -> Meaning:
    return MEANINGS.get(code, OTHER)


@dataclass(frozen=True)
class Failure:
    reason: str
    message: str
    retryable: bool


def failure(code: int, said: str, attempts: int, exit_words: str = "") -> Failure:
    """The job's failure after its separator exited with ``code`` on attempt ``attempts``,
    leaving ``said`` (one line or nothing). A final code fails with the separator's own words;
    a retryable one, once the retries are spent, says how many tries there were.
    ``exit_words`` describes the exit when nothing was said (e.g. "killed by SIGKILL")."""
    said = " ".join(said.split())
    known = meaning(code)
    if not known.retryable:
        return Failure(known.reason, said or known.default_message, False)
    detail = said or known.default_message or exit_words or f"exit code {code}"
    return Failure(known.reason, f"failed {attempts} time(s); last error: {detail}", True)
