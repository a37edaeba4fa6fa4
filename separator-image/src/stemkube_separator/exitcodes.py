"""The separator's exit codes: the contract with whoever runs it (the operator reads them from
the pod, local mode from its worker process). Stated once, in ``stemkube_contract.exitcodes``,
with what each means for the job."""

from stemkube_contract.exitcodes import (
    CRASH,
    INVALID_INPUT,
    MODEL_NOT_FOUND,
    NOT_AUDIO,
    OK,
    SOURCE_FORBIDDEN,
    SOURCE_TOO_LARGE,
    SOURCE_UNAVAILABLE,
    SOURCE_UNREACHABLE,
    TRANSIENT,
    USAGE,
)

__all__ = [
    "CRASH",
    "INVALID_INPUT",
    "MODEL_NOT_FOUND",
    "NOT_AUDIO",
    "OK",
    "SOURCE_FORBIDDEN",
    "SOURCE_TOO_LARGE",
    "SOURCE_UNAVAILABLE",
    "SOURCE_UNREACHABLE",
    "TRANSIENT",
    "USAGE",
]
