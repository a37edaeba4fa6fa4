"""Who calls the job link: the pod a projected token is bound to, and the SeparationJobs of
that pod's Job (its "members"). The reading of the API's answers is pure (``identity_of``,
``job_owner_of``, ``members_of``); ``Authenticator`` does the calls, through a
``kube.LinkKube``, and remembers an answer for a little while."""

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from stemkube_contract import joblink
from stemkube_operator.kube import LinkKube
from stemkube_operator.resource import API_VERSION, KIND

POD_NAME_EXTRA = "authentication.kubernetes.io/pod-name"
POD_UID_EXTRA = "authentication.kubernetes.io/pod-uid"
SERVICE_ACCOUNT_PREFIX = "system:serviceaccount:"
CACHE_SECONDS = 30.0
CACHE_SIZE = 4096


class LinkError(Exception):
    """A request the link answers with an error: ``status`` and words (never a token)."""

    status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequestError(LinkError):
    status = 400


class UnauthorizedError(LinkError):
    status = 401


class ForbiddenError(LinkError):
    status = 403


class UnavailableError(LinkError):
    status = 503


@dataclass(frozen=True)
class PodIdentity:
    """What a reviewed token says of its bearer."""

    namespace: str
    pod_name: str
    pod_uid: str


@dataclass(frozen=True)
class Membership:
    """The caller's SeparationJobs: its pod's namespace, and name -> uid of its Job's."""

    namespace: str
    pod_name: str
    job_name: str
    members: Mapping[str, str]

    def uid_of(self, name: str) -> str:
        uid = self.members.get(name)
        if uid is None:
            raise ForbiddenError(
                f"{self.namespace}/{name} is not a SeparationJob of this pod's Job {self.job_name}"
            )
        return uid


def _one(extra: Mapping[str, Any], key: str) -> str:
    value = extra.get(key)
    if not isinstance(value, list) or len(value) != 1 or not isinstance(value[0], str):
        raise UnauthorizedError("the token is not bound to a pod")
    return value[0]


def identity_of(status: Mapping[str, Any], service_account: str) -> PodIdentity:
    """A TokenReview's ``status`` -> the pod; UnauthorizedError unless the token is valid, for
    the link's audience, of the separator's service account and bound to a pod."""
    if status.get("authenticated") is not True:
        raise UnauthorizedError("the token is not valid")
    if joblink.AUDIENCE not in (status.get("audiences") or []):
        raise UnauthorizedError(f"the token is not for the audience {joblink.AUDIENCE}")
    user = status.get("user") or {}
    username = str(user.get("username") or "")
    namespace, _, account = username.removeprefix(SERVICE_ACCOUNT_PREFIX).partition(":")
    if (
        not username.startswith(SERVICE_ACCOUNT_PREFIX)
        or not namespace
        or account != (service_account)
    ):
        raise UnauthorizedError(f"the token is not the service account {service_account}'s")
    extra = user.get("extra") or {}
    return PodIdentity(namespace, _one(extra, POD_NAME_EXTRA), _one(extra, POD_UID_EXTRA))


def _owners(obj: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return list((obj.get("metadata") or {}).get("ownerReferences") or [])


def job_owner_of(pod: Mapping[str, Any]) -> tuple[str, str] | None:
    """The (name, uid) of the Job that controls the pod; None if none does."""
    for ref in _owners(pod):
        if ref.get("kind") == "Job" and ref.get("controller") is True and ref.get("name"):
            return str(ref["name"]), str(ref.get("uid") or "")
    return None


def members_of(job: Mapping[str, Any]) -> dict[str, str]:
    """name -> uid of the SeparationJobs that own a Job: the one controller of a single Job,
    every member of a batch Job (``jobspec.build_job``, ``build_batch_job``)."""
    return {
        str(ref["name"]): str(ref["uid"])
        for ref in _owners(job)
        if ref.get("apiVersion") == API_VERSION
        and ref.get("kind") == KIND
        and ref.get("name")
        and ref.get("uid")
    }


def is_same(cr: Mapping[str, Any] | None, uid: str) -> bool:
    """Whether ``cr`` is the member of that uid (not gone, not another of the same name)."""
    return cr is not None and (cr.get("metadata") or {}).get("uid") == uid


class Authenticator:
    """Token -> Membership, through TokenReview, the pod, its Job. An answer is remembered
    CACHE_SECONDS (by the token's SHA-256, never the token): a pod reports progress every few
    seconds, and each report would otherwise cost three API calls. A member deleted meanwhile
    still passes here; every handler checks the member's uid on the SeparationJob itself."""

    def __init__(
        self,
        kube: LinkKube,
        service_account: str,
        clock: Callable[[], float] = time.monotonic,
        seconds: float = CACHE_SECONDS,
        size: int = CACHE_SIZE,
    ) -> None:
        self._kube = kube
        self._service_account = service_account
        self._clock = clock
        self._seconds = seconds
        self._size = size
        self._cache: OrderedDict[str, tuple[float, Membership]] = OrderedDict()
        self._lock = threading.Lock()

    def authenticate(self, token: str) -> Membership:
        digest = hashlib.sha256(token.encode()).hexdigest()
        now = self._clock()
        with self._lock:
            cached = self._cache.get(digest)
            if cached is not None and cached[0] > now:
                return cached[1]
        membership = self._look_up(token)
        with self._lock:
            self._cache[digest] = (now + self._seconds, membership)
            self._cache.move_to_end(digest)
            while len(self._cache) > self._size:
                self._cache.popitem(last=False)
        return membership

    def _look_up(self, token: str) -> Membership:
        review = self._kube.review_token(token)
        who = identity_of(review.get("status") or {}, self._service_account)
        pod = self._kube.read_pod(who.namespace, who.pod_name)
        if pod is None or (pod.get("metadata") or {}).get("uid") != who.pod_uid:
            raise UnauthorizedError(f"the token's pod {who.namespace}/{who.pod_name} is gone")
        owner = job_owner_of(pod)
        if owner is None:
            raise ForbiddenError(f"the pod {who.namespace}/{who.pod_name} belongs to no Job")
        job = self._kube.read_job(who.namespace, owner[0])
        if job is None or (job.get("metadata") or {}).get("uid") != owner[1]:
            raise UnauthorizedError(f"the pod {who.namespace}/{who.pod_name}'s Job is gone")
        return Membership(who.namespace, who.pod_name, owner[0], members_of(job))
