"""The SeparationJob resource's coordinates and the names and labels that link its children:
the contract's (``stemkube_contract.resource``), under the names the operator uses."""

from stemkube_contract.resource import (
    API_VERSION,
    CONTAINER,
    GROUP,
    KIND,
    NAME_ANNOTATION,
    NAME_LABEL,
    OPERATOR,
    PLURAL,
    SETTLED,
    SETTLED_LABEL,
    UID_LABEL,
    VERSION,
    job_name,
)

MANAGED_BY = OPERATOR
# Holds a SeparationJob until its files are gone (Kopf's on-delete handler, or settled.py).
FINALIZER = "stemkube.io/cleanup"
# The label selectors of the two watches of SeparationJobs: Kopf's, of those still in play, and
# the settled ones' (settled.py), whose deletions the operator finishes without Kopf.
UNSETTLED_SELECTOR = f"{SETTLED_LABEL}!={SETTLED}"
SETTLED_SELECTOR = f"{SETTLED_LABEL}={SETTLED}"

__all__ = [
    "API_VERSION",
    "CONTAINER",
    "FINALIZER",
    "GROUP",
    "KIND",
    "MANAGED_BY",
    "NAME_ANNOTATION",
    "NAME_LABEL",
    "PLURAL",
    "SETTLED",
    "SETTLED_LABEL",
    "SETTLED_SELECTOR",
    "UID_LABEL",
    "UNSETTLED_SELECTOR",
    "VERSION",
    "job_name",
]
