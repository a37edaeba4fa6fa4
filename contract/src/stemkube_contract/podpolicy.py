"""What a SeparationJob's spec may put on its separator pod: the facts the operator (which
refuses, always) and the chart's ValidatingAdmissionPolicy (which refuses at creation where it
is installed) must agree on.

Whoever may create a SeparationJob may not, through it, give a pod more than the deployment
allows: a priority class from the deployment's allow-list only (the chart's
``separator.allowedPriorityClasses``, plus its own ``separator.priorityClassName``), pod labels
and annotations only under ``USER_PREFIX`` or on the deployment's allow-list (another app's
``app`` label would put the pod behind that app's Services and NetworkPolicies; an AppArmor or
seccomp annotation would loosen its confinement), and deadlines within the deployment's maxima.
What the API server would refuse on the pod (a malformed label, too many annotation bytes) is
refused before any Job is created, since a Job the API server refuses can never be created.

Settings (the chart sets them from its values; allow-lists comma-separated, each entry an exact
key or a prefix ending in ``/``):

- ``STEMKUBE_ALLOWED_PRIORITY_CLASSES``
- ``STEMKUBE_ALLOWED_POD_LABELS``, ``STEMKUBE_ALLOWED_POD_ANNOTATIONS``
- ``STEMKUBE_MAX_ACTIVE_DEADLINE_SECONDS``, ``STEMKUBE_MAX_TTL_SECONDS_AFTER_FINISHED``

The patterns below are RE2 and Python alike: the chart's policy states them word for word (a
test compares them).
"""

import re
from collections.abc import Iterable
from typing import Final

# Pod label and annotation keys a SeparationJob may always set: none of stemkube's own keys
# (``resource.py``: ``stemkube.io/...``, ``app.kubernetes.io/...``) is under it.
USER_PREFIX: Final = "user.stemkube.io/"

ALLOWED_PRIORITY_CLASSES_ENV: Final = "STEMKUBE_ALLOWED_PRIORITY_CLASSES"
ALLOWED_POD_LABELS_ENV: Final = "STEMKUBE_ALLOWED_POD_LABELS"
ALLOWED_POD_ANNOTATIONS_ENV: Final = "STEMKUBE_ALLOWED_POD_ANNOTATIONS"
MAX_ACTIVE_DEADLINE_SECONDS_ENV: Final = "STEMKUBE_MAX_ACTIVE_DEADLINE_SECONDS"
MAX_TTL_SECONDS_AFTER_FINISHED_ENV: Final = "STEMKUBE_MAX_TTL_SECONDS_AFTER_FINISHED"
# The defaults of the maxima: six hours of separation (all attempts), a week kept after.
DEFAULT_MAX_ACTIVE_DEADLINE_SECONDS: Final = 6 * 3600
DEFAULT_MAX_TTL_SECONDS_AFTER_FINISHED: Final = 7 * 86400

# Kubernetes's own rules (apimachinery's validation): a qualified name is an optional DNS-1123
# subdomain prefix of at most 253 characters and "/", then a name of at most 63; a label value
# is empty or such a name. The lengths are in the patterns but for the prefix's.
_NAME: Final = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_SUBDOMAIN: Final = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
QUALIFIED_NAME_PATTERN: Final = rf"^({_SUBDOMAIN}/)?{_NAME}$"
LABEL_VALUE_PATTERN: Final = rf"^({_NAME})?$"
MAX_KEY_PREFIX: Final = 253
# The API server refuses a pod whose annotations pass 256 KiB, and the operator's own
# bookkeeping on the SeparationJob (Kopf's copy of its spec, JSON with every non-ASCII
# character escaped: up to 12 bytes each) must stay under that limit too: a spec's annotations,
# keys and values, have at most this many characters (the CRD's rule, and the operator's check
# for a CRD older than it).
MAX_ANNOTATIONS_CHARACTERS: Final = 16384
# prefix, "/", name: the longest valid key (the CRD's rule on label keys).
MAX_KEY_LENGTH: Final = MAX_KEY_PREFIX + 1 + 63


def qualified_name_problem(key: str) -> str | None:
    """Why ``key`` cannot be a label or annotation key, or None."""
    if not re.fullmatch(QUALIFIED_NAME_PATTERN, key):
        return (
            "not a valid key: an optional DNS subdomain prefix and '/', then at most 63 "
            "letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
        )
    if key.find("/") > MAX_KEY_PREFIX:
        return f"not a valid key: its prefix is longer than {MAX_KEY_PREFIX} characters"
    return None


def label_value_problem(value: str) -> str | None:
    if not re.fullmatch(LABEL_VALUE_PATTERN, value):
        return (
            "not a valid label value: at most 63 letters, digits, '-', '_' or '.', starting "
            "and ending with a letter or digit"
        )
    return None


def annotations_size(annotations: dict[str, str]) -> int:
    """Characters (code points: CEL's size()) of the keys and values."""
    return sum(len(k) + len(str(v)) for k, v in annotations.items())


def allow_list_problem(entry: str) -> str | None:
    """Why ``entry`` cannot be an allow-list entry (an exact key, or a prefix ending in '/')."""
    if entry.endswith("/"):
        return qualified_name_problem(entry + "x")
    return qualified_name_problem(entry)


def key_allowed(key: str, allowed: Iterable[str]) -> bool:
    """Under USER_PREFIX, or an entry of ``allowed``: the key itself, or a prefix ending in
    '/' that it starts with."""
    if key.startswith(USER_PREFIX):
        return True
    return any(key.startswith(a) if a.endswith("/") else key == a for a in allowed)
