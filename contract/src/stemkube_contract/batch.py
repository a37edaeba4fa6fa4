"""Several songs in one separator process: what the operator, the separator, local mode and the
CRD agree on.

Kubernetes mode: when SeparationJobs of one namespace and one spec (all but ``input`` and
``output``) wait in the operator's queue, one Job may take up to ``STEMKUBE_BATCH_MAX_PER_JOB``
of them. Its separator gets one ``--item INPUT OUTPUT NAMESPACE/NAME`` per member (the shared
options once), loads the model once and pipelines the songs. Each member keeps its own status:
the separator writes its progress and, when the member ends, its ``status.outcome`` (exit code
and message, as a single run's process exit and termination message would say); the operator
turns an outcome into the member's phase. The Job and its pods name the members in the
``MEMBERS_ANNOTATION``.

Local mode: a worker process started with ``--serve`` keeps the models it loaded and runs one
separation per request line on its standard input (the single run's command line, as JSON),
answering each with one line on its standard output.
"""

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from stemkube_contract.resource import TERMINAL

# The operator's setting (the chart's separator.batch.maxPerJob): 1 turns batching off.
MAX_PER_JOB_ENV: Final = "STEMKUBE_BATCH_MAX_PER_JOB"
DEFAULT_MAX_PER_JOB: Final = 1
LIMIT_MAX_PER_JOB: Final = 32

# On a batch Job and its pod template: the members, as JSON [{"name": ..., "uid": ...}, ...].
MEMBERS_ANNOTATION: Final = "stemkube.io/batch-members"

# The separator's flag for one member: --item INPUT OUTPUT NAMESPACE/NAME (repeated).
ITEM_FLAG: Final = "--item"
ITEM_METAVAR: Final = ("INPUT", "OUTPUT", "NAMESPACE/NAME")

# .status.outcome of a member: {"exitCode": int, "message": str}, written once, by its separator.
OUTCOME_FIELD: Final = "outcome"
MAX_OUTCOME_MESSAGE: Final = 1024

# The spec fields that differ between the members of one batch.
PER_MEMBER_FIELDS: Final = ("input", "output")

# Local mode's worker: --serve, then request and reply lines.
SERVE_FLAG: Final = "--serve"


@dataclass(frozen=True)
class Member:
    name: str
    uid: str


def encode_members(members: Sequence[Member]) -> str:
    return json.dumps([{"name": m.name, "uid": m.uid} for m in members], separators=(",", ":"))


def decode_members(text: str | None) -> list[Member]:
    """The members named by an annotation; [] for a missing or malformed one (not a batch)."""
    if not text:
        return []
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return []
    if not isinstance(data, list):
        return []
    return [
        Member(str(item["name"]), str(item["uid"]))
        for item in data
        if isinstance(item, dict) and item.get("name") and item.get("uid")
    ]


def batch_key(namespace: str, spec: Mapping[str, Any]) -> str:
    """SeparationJobs with equal keys may share a Job: one namespace, one spec but for
    ``PER_MEMBER_FIELDS`` (model, options, deadlines, queue, priority, pod labels...). A job
    from a URL (``spec.input.url``) shares no Job: its URL reaches its pod in one environment
    variable, so its key is its whole spec (its output object is its own)."""
    if isinstance(spec.get("input"), Mapping) and spec["input"].get("url"):
        return json.dumps(["url", namespace, spec], sort_keys=True, separators=(",", ":"))
    shared = {k: v for k, v in spec.items() if k not in PER_MEMBER_FIELDS}
    return json.dumps([namespace, shared], sort_keys=True, separators=(",", ":"))


def item_args(input_url: str, output_url: str, namespace: str, name: str) -> list[str]:
    return [ITEM_FLAG, input_url, output_url, f"{namespace}/{name}"]


def _one_line(message: str) -> str:
    line = " ".join(message.split())
    if len(line) <= MAX_OUTCOME_MESSAGE:
        return line
    return line[: MAX_OUTCOME_MESSAGE - 3] + "..."


def outcome_patch(exit_code: int, message: str) -> dict[str, Any]:
    """The merge patch a separator writes (status subresource) when a member ends."""
    return {"status": {OUTCOME_FIELD: {"exitCode": exit_code, "message": _one_line(message)}}}


@dataclass(frozen=True)
class Outcome:
    exit_code: int
    message: str


def outcome_of(status: Mapping[str, Any] | None) -> Outcome | None:
    raw = (status or {}).get(OUTCOME_FIELD)
    if not isinstance(raw, Mapping) or not isinstance(raw.get("exitCode"), int):
        return None
    return Outcome(int(raw["exitCode"]), str(raw.get("message") or ""))


def parse_max_per_job(text: str | None) -> int:
    """``STEMKUBE_BATCH_MAX_PER_JOB``: unset means ``DEFAULT_MAX_PER_JOB``."""
    if text is None or text.strip() == "":
        return DEFAULT_MAX_PER_JOB
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{MAX_PER_JOB_ENV} must be a whole number, not {text!r}") from None
    if not 1 <= value <= LIMIT_MAX_PER_JOB:
        raise ValueError(f"{MAX_PER_JOB_ENV} must be 1 to {LIMIT_MAX_PER_JOB}, not {value}")
    return value


# Local mode's worker protocol: one request line in, one reply line out, per separation.
def serve_request(argv: Sequence[str], log_path: str) -> str:
    """A request: the single run's command line, and the file its log lines go to."""
    return json.dumps({"argv": list(argv), "log": log_path}) + "\n"


def parse_serve_request(line: str) -> tuple[list[str], str]:
    data = json.loads(line)
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("argv"), list)
        or not all(isinstance(a, str) for a in data["argv"])
        or not isinstance(data.get("log"), str)
    ):
        raise ValueError('a request is {"argv": [str, ...], "log": str}')
    return list(data["argv"]), str(data["log"])


def serve_reply(exit_code: int) -> str:
    """A reply, once the separation ended: its exit code as a single run's process would give
    (its message is in the request's termination log, as for a single run)."""
    return json.dumps({"exitCode": exit_code}) + "\n"


def parse_serve_reply(line: str) -> int | None:
    try:
        data = json.loads(line)
    except json.JSONDecodeError:
        return None
    code = data.get("exitCode") if isinstance(data, dict) else None
    return code if isinstance(code, int) else None


def skip_reason(cr: Mapping[str, Any] | None, uid: str | None = None) -> str | None:
    """Why a batch member is not to run, given its SeparationJob as the API server has it now
    (None: not found; ``uid``: the one the Job was made for, when known); None if it is to run.
    The separator's own check and the operator's job link answer by this one rule."""
    if cr is None:
        return "its SeparationJob is gone"
    metadata = cr.get("metadata") or {}
    if uid is not None and metadata.get("uid") != uid:
        return "its SeparationJob is gone (another of the same name exists)"
    if metadata.get("deletionTimestamp"):
        return "its SeparationJob is being deleted"
    status = cr.get("status") or {}
    outcome = outcome_of(status)
    if outcome is not None:
        return f"it has already ended (outcome: exit code {outcome.exit_code})"
    phase = status.get("phase")
    if phase in TERMINAL:
        return f"it has already ended (phase {phase})"
    return None
