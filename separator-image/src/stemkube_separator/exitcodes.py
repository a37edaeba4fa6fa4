"""The separator's exit codes: the contract with the operator, which reads them from the pod.

The operator's Job retries only what may succeed on a second try, so bad input must never
share a code with a storage outage.
"""

from typing import Final

OK: Final = 0
# argparse's own code for a malformed command line (also: a --model-repo that does not exist).
USAGE: Final = 2
# The input or the request can never succeed: not audio, empty, truncated beyond recovery,
# zero duration, longer than the limit, unknown model or stem. Never retried.
INVALID_INPUT: Final = 3
# Storage unreachable, S3 errors, network, no CUDA device where one was required. Retried.
TRANSIENT: Final = 75  # EX_TEMPFAIL of sysexits.h
# An unexpected crash (a bug): Python's own code for an uncaught exception.
CRASH: Final = 1
