"""The SeparationJob resource: its coordinates, the labels and annotations that link it to its
children, its phases and the REST API's words for them."""

import hashlib

GROUP = "stemkube.io"
VERSION = "v1alpha1"
PLURAL = "separationjobs"
KIND = "SeparationJob"
API_VERSION = f"{GROUP}/{VERSION}"

APP_NAME_LABEL = "app.kubernetes.io/name"
APP_NAME = "stemkube"
COMPONENT_LABEL = "app.kubernetes.io/component"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
CREATED_BY_LABEL = "app.kubernetes.io/created-by"
API_CREATOR = "stemkube-api"
OPERATOR = "stemkube-operator"
# The child Job and its pods carry the owner's UID: unlike its name, it never refers to a
# deleted-and-recreated SeparationJob of the same name.
UID_LABEL = "stemkube.io/separation-job-uid"
NAME_LABEL = "stemkube.io/separation-job"
# The owner's full name (a label value may be too short for it): how a pod or Job event finds
# the SeparationJob to sync.
NAME_ANNOTATION = "stemkube.io/separation-job"
# The API's creation stamp with microseconds (creationTimestamp has seconds only).
CREATED_AT_ANNOTATION = "stemkube.io/created-at"
# The tenant a SeparationJob belongs to (the API key's that created it) and that key's id
# (public, never the key). A SeparationJob without the tenant label belongs to no tenant: only
# admin keys see it.
TENANT_LABEL = "stemkube.io/tenant"
API_KEY_ID_LABEL = "stemkube.io/api-key-id"
# "true" on a SeparationJob whose input is not its own (an object the caller already had, the
# API's ``s3`` source): the cleanup leaves it in storage when the job goes.
KEEP_INPUT_ANNOTATION = "stemkube.io/keep-input"
# The uploaded input's size in bytes (decimal), written by the API at creation: with
# status.result.size, what a key's jobs keep in storage (its bytes_stored quota).
INPUT_SIZE_ANNOTATION = "stemkube.io/input-size"
# A SeparationJob made under an Idempotency-Key: a hash of (the caller's key id, the key) as
# the label (the client's key itself is never stored), the SHA-256 of the request that made
# it as the annotation (a later request of the key replays only if it is the same).
IDEMPOTENCY_KEY_LABEL = "stemkube.io/idempotency-key"
IDEMPOTENCY_REQUEST_ANNOTATION = "stemkube.io/idempotency-request"
# The request batch (POST /batches: several songs sent at once by a client) a SeparationJob was
# created in: the batch's id, a UUID the API made. Not the operator's GPU batching of several
# SeparationJobs into one Job (``stemkube_contract.batch``), which no user sees: hence
# "request-batch".
BATCH_LABEL = "stemkube.io/request-batch"
CONTAINER = "separator"
# SETTLED on a SeparationJob the operator has nothing left to do for but let it go (finished,
# its webhook delivered or given up). The operator's watch leaves such ones out by this label,
# so neither its memory nor its start-up grows with the history it keeps (issue #18).
SETTLED_LABEL = "stemkube.io/settled"
SETTLED = "true"

MAX_LABEL_VALUE = 63

# .status.phase
PENDING, RUNNING, COMPLETED, FAILED = "Pending", "Running", "Completed", "Failed"
PHASES = (PENDING, RUNNING, COMPLETED, FAILED)
TERMINAL = (COMPLETED, FAILED)
# .status.message (and a true condition's): at most this many characters, so a status stays
# small in etcd whatever a failure said (a termination message is up to 4096 bytes).
MAX_STATUS_MESSAGE = 2048


def bounded_message(message: str) -> str:
    """A status message within ``MAX_STATUS_MESSAGE``: its end is cut, marked with "..."."""
    if len(message) <= MAX_STATUS_MESSAGE:
        return message
    return message[: MAX_STATUS_MESSAGE - 3] + "..."


# The REST API's words (the original service's) for the phases.
STATUS_PENDING, STATUS_PROCESSING = "pending", "processing"
STATUS_COMPLETED, STATUS_FAILED = "completed", "failed"
PHASE_TO_STATUS = {
    PENDING: STATUS_PENDING,
    RUNNING: STATUS_PROCESSING,
    COMPLETED: STATUS_COMPLETED,
    FAILED: STATUS_FAILED,
}
STATUSES = tuple(PHASE_TO_STATUS.values())


def status_of(phase: str | None) -> str:
    """Phase -> the REST API's word. No phase yet: the operator has not seen it."""
    return PHASE_TO_STATUS.get(phase or PENDING, STATUS_PENDING)


def job_name(cr_name: str) -> str:
    """The child Job's name: the SeparationJob's own, shortened with a hash suffix if needed,
    since a Job's name is also its pods' ``job-name`` label value (63 characters at most)."""
    if len(cr_name) <= MAX_LABEL_VALUE:
        return cr_name
    digest = hashlib.sha256(cr_name.encode()).hexdigest()[:8]
    return f"{cr_name[: MAX_LABEL_VALUE - 9].rstrip('-.')}-{digest}"
