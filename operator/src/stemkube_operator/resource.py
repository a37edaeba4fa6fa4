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
    UID_LABEL,
    VERSION,
    job_name,
)

MANAGED_BY = OPERATOR

__all__ = [
    "API_VERSION",
    "CONTAINER",
    "GROUP",
    "KIND",
    "MANAGED_BY",
    "NAME_ANNOTATION",
    "NAME_LABEL",
    "PLURAL",
    "UID_LABEL",
    "VERSION",
    "job_name",
]
