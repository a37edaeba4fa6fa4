"""The reasons a SeparationJob fails with when it is refused before any Job exists (the
operator's admission check, the chart's admission policies): one home for each word."""

from typing import Final

# Something the deployment does not allow: an escalation (``podpolicy``), an object outside the
# namespace's storage (``scopes``), a Job the API server forbade.
FORBIDDEN: Final = "Forbidden"
# A spec that cannot run as written (a bad option or key, what the API server would refuse).
INVALID_ARGUMENTS: Final = "InvalidArguments"
# A model this deployment does not serve.
UNKNOWN_MODEL: Final = "UnknownModel"
