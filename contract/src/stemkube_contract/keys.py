"""Object keys: where a job's files live, and which keys a SeparationJob may name at all."""

import re

INPUTS_PREFIX = "inputs/"
RESULTS_PREFIX = "results/"
# A tenant's objects live under their own prefix: tenants/<tenant>/inputs/..., .../results/...
TENANTS_PREFIX = "tenants/"
# A tenant name is a label value and one key segment: a DNS label.
TENANT_PATTERN = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
_TENANT = re.compile(TENANT_PATTERN)
MAX_KEY_LENGTH = 1024
# A Kubernetes object name (DNS subdomain): a job id is the SeparationJob's name.
JOB_ID_PATTERN = r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"
_JOB_ID = re.compile(JOB_ID_PATTERN)

# A key is a relative path of plain segments: no leading "/", no empty, "." or ".." segment,
# no backslash or control character. RE2 syntax, so that the CRD's CEL rule is this very
# expression (the contract test compares them).
BAD_KEY_PATTERN = r"(^/|//|/$|(^|/)\.\.?(/|$)|\\|[\x00-\x1f\x7f])"
_BAD_KEY = re.compile(BAD_KEY_PATTERN)
KEY_RULE_MESSAGE = (
    "an object key is a relative path of plain segments: no leading or trailing /, no empty, "
    "'.' or '..' segment, no backslash or control character"
)


def valid_job_id(job_id: str) -> bool:
    return bool(_JOB_ID.fullmatch(job_id))


def key_problem(key: str) -> str | None:
    """Why ``key`` may not be used, or None."""
    if not key or len(key) > MAX_KEY_LENGTH:
        return f"an object key has 1 to {MAX_KEY_LENGTH} characters"
    if _BAD_KEY.search(key):
        return KEY_RULE_MESSAGE
    return None


def valid_tenant(tenant: str) -> bool:
    return bool(_TENANT.fullmatch(tenant))


def check_root(root: str) -> str:
    """``root``, the prefix of all a deployment's keys (its namespace's storage scope,
    ``stemkube_contract.scopes``): empty, or a key prefix ending in "/"."""
    if root and (not root.endswith("/") or key_problem(root[:-1])):
        raise ValueError(f"not a key prefix: {root!r}")
    return root


def home(tenant: str | None, root: str = "") -> str:
    """The prefix of a tenant's objects under ``root``; ``root`` itself for the jobs of no
    tenant (the layout from before tenants existed)."""
    if tenant is None:
        return check_root(root)
    if not valid_tenant(tenant):
        raise ValueError(f"not a tenant: {tenant!r}")
    return f"{check_root(root)}{TENANTS_PREFIX}{tenant}/"


def input_key(job_id: str, extension: str, tenant: str | None = None, root: str = "") -> str:
    """Where an upload is stored: built from the job id, a known extension, the tenant
    (a checked name) and the deployment's root, never from user text."""
    if not valid_job_id(job_id):
        raise ValueError(f"not a job id: {job_id!r}")
    if not re.fullmatch(r"[a-z0-9]{1,8}", extension):
        raise ValueError(f"not an extension: {extension!r}")
    return f"{home(tenant, root)}{INPUTS_PREFIX}{job_id}/input.{extension}"


def result_key(job_id: str, tenant: str | None = None, root: str = "") -> str:
    if not valid_job_id(job_id):
        raise ValueError(f"not a job id: {job_id!r}")
    return f"{home(tenant, root)}{RESULTS_PREFIX}{job_id}.zip"
