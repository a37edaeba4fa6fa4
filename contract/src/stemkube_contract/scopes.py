"""Storage scopes: the bucket and key prefix that a namespace's SeparationJobs may name.

A SeparationJob names its input and output objects itself, and its separator reads and writes
them, so without a bound whoever may create one in any namespace could read, overwrite or have
the cleanup delete any object of the deployment's storage. Each namespace therefore gets one
scope: a bucket and a key prefix. The operator refuses a SeparationJob naming an object outside
its namespace's scope before any Job exists (reason ``Forbidden``), and its cleanup never
deletes outside it; the chart's ValidatingAdmissionPolicy refuses the same at creation. The API
builds every key of its own inside its namespace's scope (``root``).

The deployment's setting, ``STEMKUBE_STORAGE_SCOPES`` (the chart's ``storageScopes``), in JSON:

    {"default": {"bucket": "stemkube", "prefix": "{namespace}/"},
     "namespaces": {"team-a": {"bucket": "team-a-songs", "prefix": ""}}}

``default`` applies to every namespace not listed; ``{namespace}`` in its prefix is the
namespace's name. Unset: the release's bucket, prefix ``<namespace>/``. A bucket ``*`` means any
bucket, and an empty prefix the whole bucket: ``{"default": {"bucket": "*", "prefix": ""}}`` turns
the confinement off (for a cluster whose every SeparationJob author is trusted with all storage).
"""

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from stemkube_contract.keys import key_problem

STORAGE_SCOPES_ENV: Final = "STEMKUBE_STORAGE_SCOPES"
NAMESPACE_PLACEHOLDER: Final = "{namespace}"
ANY_BUCKET: Final = "*"
DEFAULT_PREFIX: Final = NAMESPACE_PLACEHOLDER + "/"
# The release's bucket when nothing names one (the chart's storage.bucket default).
DEFAULT_BUCKET: Final = "stemkube"


@dataclass(frozen=True)
class Scope:
    """One namespace's objects: those of ``bucket`` (``*``: any) whose key starts with
    ``prefix`` (empty, or a key prefix ending in ``/``)."""

    bucket: str
    prefix: str = ""

    def allows(self, bucket: str, key: str) -> bool:
        # Keys are checked by key_problem first (no "." or ".." segment), so a key that starts
        # with the prefix cannot leave it.
        return (self.bucket == ANY_BUCKET or bucket == self.bucket) and key.startswith(self.prefix)

    def describe(self) -> str:
        if self.bucket == ANY_BUCKET:
            return f"keys under {self.prefix} of any bucket" if self.prefix else "any object"
        return f"s3://{self.bucket}/{self.prefix}" + ("" if self.prefix else " (the whole bucket)")


@dataclass(frozen=True)
class Scopes:
    default: Scope
    namespaces: Mapping[str, Scope] = field(default_factory=dict)

    def of(self, namespace: str) -> Scope:
        listed = self.namespaces.get(namespace)
        if listed is not None:
            return listed
        return Scope(
            self.default.bucket, self.default.prefix.replace(NAMESPACE_PLACEHOLDER, namespace)
        )

    def to_json(self) -> str:
        def one(scope: Scope) -> dict[str, str]:
            return {"bucket": scope.bucket, "prefix": scope.prefix}

        return json.dumps(
            {
                "default": one(self.default),
                "namespaces": {name: one(s) for name, s in sorted(self.namespaces.items())},
            },
            sort_keys=True,
        )


def default_scopes(bucket: str) -> Scopes:
    return Scopes(Scope(bucket, DEFAULT_PREFIX))


def _scope(data: Any, where: str, template: bool) -> Scope:
    if not isinstance(data, dict) or set(data) - {"bucket", "prefix"} or "bucket" not in data:
        raise ValueError(f'{where}: expected {{"bucket": ..., "prefix": ...}}')
    bucket, prefix = data["bucket"], data.get("prefix", "")
    if not isinstance(bucket, str) or not bucket or not isinstance(prefix, str):
        raise ValueError(f"{where}: bucket is a non-empty string and prefix a string")
    if prefix:
        concrete = prefix.replace(NAMESPACE_PLACEHOLDER, "ns") if template else prefix
        if NAMESPACE_PLACEHOLDER in concrete:
            raise ValueError(f"{where}: {NAMESPACE_PLACEHOLDER} only in the default's prefix")
        problem = key_problem(concrete.removesuffix("/"))
        if not prefix.endswith("/") or problem:
            raise ValueError(
                f"{where}: prefix {prefix!r} must be empty or a key prefix ending in '/'"
                + (f" ({problem})" if problem else "")
            )
    return Scope(bucket, prefix)


def parse_scopes(text: str, bucket: str) -> Scopes:
    """The setting's JSON; empty: ``default_scopes(bucket)``. A ValueError says what is wrong."""
    if not text.strip():
        return default_scopes(bucket)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{STORAGE_SCOPES_ENV}: not JSON: {exc}") from None
    if not isinstance(data, dict) or set(data) - {"default", "namespaces"}:
        raise ValueError(f"{STORAGE_SCOPES_ENV}: expected an object of default and namespaces")
    default = (
        _scope(data["default"], f"{STORAGE_SCOPES_ENV}.default", template=True)
        if "default" in data
        else default_scopes(bucket).default
    )
    listed = data.get("namespaces") or {}
    if not isinstance(listed, dict):
        raise ValueError(f"{STORAGE_SCOPES_ENV}.namespaces: expected an object")
    namespaces = {
        str(name): _scope(value, f"{STORAGE_SCOPES_ENV}.namespaces.{name}", template=False)
        for name, value in listed.items()
    }
    return Scopes(default, namespaces)


def scopes_from_env(env: Mapping[str, str], bucket: str) -> Scopes:
    return parse_scopes(env.get(STORAGE_SCOPES_ENV, ""), bucket)


def objects_named(spec: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(field, bucket, key) of each object a SeparationJob's spec names: its output, and its
    input unless that is a URL."""
    named = []
    for side in ("input", "output"):
        ref = spec.get(side) or {}
        if side == "input" and ref.get("url"):
            continue
        named.append((f"spec.{side}", str(ref.get("bucket", "")), str(ref.get("key", ""))))
    return named


def refusal(spec: Mapping[str, Any], namespace: str, scopes: Scopes) -> str | None:
    """Why a SeparationJob of ``namespace`` may not name its objects, or None."""
    scope = scopes.of(namespace)
    for where, bucket, key in objects_named(spec):
        if not scope.allows(bucket, key):
            return (
                f"{where} s3://{bucket}/{key} is outside the storage of namespace {namespace}: "
                f"SeparationJobs there may name objects in {scope.describe()} only "
                f"(the chart's storageScopes)"
            )
    return None


# Confinement off: any object of any bucket, for every namespace.
UNCONFINED: Final = Scopes(Scope(ANY_BUCKET, ""))
