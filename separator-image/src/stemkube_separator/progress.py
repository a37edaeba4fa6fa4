"""Progress 0-100: to the SeparationJob's status (``--progress-cr``: through the Kubernetes
API, or the job link in link mode) or to the log.

Writes happen in a background thread holding only the latest value, so a slow or unreachable
API server (or link) never slows the separation, and a failed write is logged, never raised.
"""

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from stemkube_contract.joblink import ProgressReport
from stemkube_contract.progressfile import Progress, format_progress
from stemkube_contract.resource import GROUP, PLURAL, VERSION
from stemkube_contract.usage import audio_patch
from stemkube_separator import link, logs
from stemkube_separator.link import Link

log = logging.getLogger(__name__)

MIN_INTERVAL = 1.0  # seconds between two writes
FINAL_WAIT = 10.0  # how long close() waits for the last write


class Reporter(Protocol):
    def update(self, percent: int) -> None: ...

    def audio(self, seconds: float) -> None:
        """The song's length, once decoded: what the API key's audio quota counts."""

    def close(self) -> None: ...


def stage_percent(start: int, end: int, fraction: float) -> int:
    """Map a stage's fraction done onto its share of the 0-100 scale."""
    fraction = min(1.0, max(0.0, fraction))
    return start + int((end - start) * fraction)


class Throttle:
    """Lets a new value through at most once per ``interval``; the last value always passes."""

    def __init__(self, interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.clock = clock
        self.last: float | None = None

    def ready(self, final: bool = False) -> bool:
        now = self.clock()
        if final or self.last is None or now - self.last >= self.interval:
            self.last = now
            return True
        return False


class LogReporter:
    def __init__(self, interval: float = MIN_INTERVAL) -> None:
        self.throttle = Throttle(interval)
        self.percent = -1

    def update(self, percent: int) -> None:
        if percent <= self.percent:
            return
        self.percent = percent
        if self.throttle.ready(final=percent >= 100):
            log.info("progress %d%%", percent, extra={"progress": percent})

    def audio(self, seconds: float) -> None:
        pass  # the log has it already ("decoded ... s")

    def close(self) -> None:
        pass


class FileReporter(LogReporter):
    """Log lines, plus the latest percentage in a file that another process polls (local
    mode's worker). The file is replaced whole, so a reader never sees a partial number."""

    def __init__(self, path: str, interval: float = MIN_INTERVAL) -> None:
        super().__init__(interval)
        self.path = path
        self.file_throttle = Throttle(interval)
        self.audio_seconds: float | None = None

    def update(self, percent: int) -> None:
        before = self.percent
        super().update(percent)
        if self.percent > before and self.file_throttle.ready(final=percent >= 100):
            self._write(percent)

    def audio(self, seconds: float) -> None:
        self.audio_seconds = seconds
        self._write(max(0, self.percent))  # at once: the worker may miss a throttled one

    def _write(self, percent: int) -> None:
        tmp = f"{self.path}.tmp"
        try:
            with open(tmp, "w", encoding="ascii") as file:
                file.write(format_progress(Progress(percent, self.audio_seconds)))
            os.replace(tmp, self.path)
        except OSError as exc:
            log.warning("could not write progress to %s: %s", self.path, exc)


def status_patch(percent: int) -> dict[str, Any]:
    return {"status": {"progress": percent}}


def not_found(exc: BaseException) -> bool:
    """The API server's 404 (kubernetes' ApiException, or anything with its ``status``)."""
    return getattr(exc, "status", None) == 404


def deleted(obj: Mapping[str, Any] | None, uid: str | None) -> bool:
    """Whether a SeparationJob the API server returned is being deleted, or is another one of
    the same name than the one with ``uid`` (deleted and created again)."""
    if not isinstance(obj, Mapping):
        return False  # nothing to tell (a test's stand-in)
    metadata = obj.get("metadata") or {}
    if metadata.get("deletionTimestamp"):
        return True
    return uid is not None and metadata.get("uid") not in (None, uid)


class Sender(Protocol):
    """Where a ``StatusReporter`` writes: each call writes one value and says whether the
    SeparationJob is gone, or raises (logged by the reporter, never fatal)."""

    where: str  # NAMESPACE/NAME, in log lines

    def progress(self, percent: int) -> bool: ...

    def audio(self, seconds: float) -> bool: ...


class StatusReporter:
    """Progress (and the song's length) to a SeparationJob's status through ``sender``.

    ``gone`` is set once a write finds the SeparationJob deleted, being deleted, or replaced
    by another of the same name: a batch stops that member's work."""

    def __init__(self, sender: Sender, interval: float = MIN_INTERVAL) -> None:
        self.sender = sender
        self.interval = interval
        self.gone = threading.Event()
        self.cond = threading.Condition()
        self.pending: int | None = None
        self.pending_audio: float | None = None
        self.sent = -1
        self.closing = False
        self.thread = threading.Thread(
            target=logs.carrying_job(self._run), name="progress", daemon=True
        )
        self.thread.start()

    def update(self, percent: int) -> None:
        with self.cond:
            if percent > max(self.sent, self.pending if self.pending is not None else -1):
                self.pending = percent
                self.cond.notify()

    def audio(self, seconds: float) -> None:
        with self.cond:
            self.pending_audio = seconds
            self.cond.notify()

    def close(self) -> None:
        with self.cond:
            self.closing = True
            self.cond.notify()
        self.thread.join(FINAL_WAIT)

    def _run(self) -> None:
        while True:
            with self.cond:
                while self.pending is None and self.pending_audio is None and not self.closing:
                    self.cond.wait()
                if self.pending is None and self.pending_audio is None:
                    return
                percent, self.pending = self.pending, None
                audio, self.pending_audio = self.pending_audio, None
            if audio is not None:
                self._write_audio(audio)
            if percent is None:
                continue
            self._write(percent)
            with self.cond:
                # Sleep out the interval, unless closing: then the last value goes at once.
                deadline = time.monotonic() + self.interval
                while not self.closing and (left := deadline - time.monotonic()) > 0:
                    self.cond.wait(left)

    def _write(self, percent: int) -> None:
        if self._send(lambda: self.sender.progress(percent), "progress", {"progress": percent}):
            self.sent = percent

    def _write_audio(self, seconds: float) -> None:
        self._send(
            lambda: self.sender.audio(seconds), "the song's length", {"duration": round(seconds, 3)}
        )

    def _send(self, write: Callable[[], bool], what: str, extra: dict[str, Any]) -> bool:
        try:
            if write():
                self.gone.set()
            return True
        except Exception as exc:
            if not_found(exc):
                self.gone.set()
            log.warning("could not write %s to %s: %s", what, self.sender.where, exc, extra=extra)
            return False


class ApiSender:
    """JSON merge-patches through the status subresource of the Kubernetes API."""

    def __init__(self, namespace: str, name: str, api: Any, uid: str | None = None) -> None:
        self.namespace, self.name, self.uid = namespace, name, uid
        self.where = f"{namespace}/{name}"
        self.api = api  # kubernetes.client.CustomObjectsApi

    def progress(self, percent: int) -> bool:
        return self._patch(status_patch(percent))

    def audio(self, seconds: float) -> bool:
        return self._patch(audio_patch(seconds))

    def _patch(self, patch: dict[str, Any]) -> bool:
        written = self.api.patch_namespaced_custom_object_status(
            GROUP, VERSION, self.namespace, PLURAL, self.name, patch, _request_timeout=5
        )
        return deleted(written, self.uid)


class LinkSender:
    """``ProgressReport``s to the job link, which merges them into the status."""

    def __init__(self, link: Link, namespace: str, name: str) -> None:
        self.link, self.name = link, name
        self.where = f"{namespace}/{name}"

    def progress(self, percent: int) -> bool:
        return self.link.progress(ProgressReport(self.name, progress=percent))

    def audio(self, seconds: float) -> bool:
        return self.link.progress(ProgressReport(self.name, audio_seconds=seconds))


class CrReporter(StatusReporter):
    """Through the Kubernetes API; ``uid``: the SeparationJob's, so that another one created
    under the same name counts as this one gone."""

    def __init__(
        self,
        namespace: str,
        name: str,
        api: Any,
        interval: float = MIN_INTERVAL,
        uid: str | None = None,
    ) -> None:
        self.namespace, self.name, self.api, self.uid = namespace, name, api, uid
        super().__init__(ApiSender(namespace, name, api, uid), interval)


class LinkReporter(StatusReporter):
    """Through the job link (link mode: the pod has no Kubernetes permission)."""

    def __init__(
        self, link: Link, namespace: str, name: str, interval: float = MIN_INTERVAL
    ) -> None:
        self.namespace, self.name = namespace, name
        super().__init__(LinkSender(link, namespace, name), interval)


def custom_objects_api() -> Any:
    """A ``kubernetes.client.CustomObjectsApi`` configured from ``KUBECONFIG`` when set (the
    test tier, a developer), else from the pod's service account; raises if neither is."""
    from kubernetes import client, config

    if os.environ.get("KUBECONFIG"):
        api_client = config.new_client_from_config()
    else:
        config.load_incluster_config()
        api_client = client.ApiClient()
    return client.CustomObjectsApi(api_client)


def cr_reporter(namespace: str, name: str, env: Mapping[str, str] = os.environ) -> Reporter:
    """Progress to a SeparationJob: through the job link in link mode (``link.from_env``),
    else through the Kubernetes API (``custom_objects_api``), whose missing configuration
    degrades to log lines: progress is never fatal."""
    linked = link.from_env(env)
    if linked is not None:
        return LinkReporter(linked, namespace, name)
    try:
        api = custom_objects_api()
    except Exception as exc:
        log.warning("no Kubernetes configuration, progress goes to the log: %s", exc)
        return LogReporter()
    return CrReporter(namespace, name, api)
