"""The SeparationJob resource's coordinates, and the names and labels that link its children."""

import hashlib

GROUP = "stemkube.io"
VERSION = "v1alpha1"
PLURAL = "separationjobs"
KIND = "SeparationJob"
API_VERSION = f"{GROUP}/{VERSION}"

# The child Job and its pods carry the owner's UID: unlike its name, it never refers to a
# deleted-and-recreated SeparationJob of the same name.
UID_LABEL = "stemkube.io/separation-job-uid"
NAME_LABEL = "stemkube.io/separation-job"
# The owner's full name (a label value may be too short for it): how a pod or Job event finds
# the SeparationJob to sync.
NAME_ANNOTATION = "stemkube.io/separation-job"
CONTAINER = "separator"
MANAGED_BY = "stemkube-operator"

MAX_LABEL_VALUE = 63

# The separator's exit codes (its contract with us, see separator-image/README.md).
EXIT_USAGE = 2  # the command line we built is wrong: retrying cannot help
EXIT_INVALID_INPUT = 3  # the song cannot be separated: never retried
EXIT_TRANSIENT = 75  # storage or network trouble: retried up to the backoff limit


def job_name(cr_name: str) -> str:
    """The child Job's name: the SeparationJob's own, shortened with a hash suffix if needed,
    since a Job's name is also its pods' ``job-name`` label value (63 characters at most)."""
    if len(cr_name) <= MAX_LABEL_VALUE:
        return cr_name
    digest = hashlib.sha256(cr_name.encode()).hexdigest()[:8]
    return f"{cr_name[: MAX_LABEL_VALUE - 9].rstrip('-.')}-{digest}"
