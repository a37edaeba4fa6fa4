"""``stemkube-separate --item INPUT OUTPUT NAMESPACE/NAME ...``: the songs of several
SeparationJobs of one model and one set of options in one process (a batched Job; the words
are ``stemkube_contract.batch``'s).

The model loads once; then each member, in order:

- its SeparationJob is read first, and the member skipped if it is gone, being deleted or has
  already ended (an outcome, a terminal phase): a pod the Job controller runs again after a
  crash redoes only the members that had not ended;
- it runs as a single run of it would (``pipeline``), its progress on its SeparationJob and
  its name in its log lines;
- deleted while it runs (a progress write answers 404, or shows the deletion), its work stops
  and its result, if already stored, is removed;
- when it ends with 0 or a final code (``FINAL_CODES``) its outcome, the code and the message a
  single run's termination log would hold, goes to its status; a retryable failure leaves no
  outcome, and the process then exits with the transient code so that the Job runs the pod
  again.

While one member separates, the next member's song is fetched and decoded in another thread
(one song ahead); on a GPU a member's last encodes, its ZIP and its upload also run while the
next one separates (``overlap_tail``). Failures that concern every member (the model, the
options, the storage settings) end the batch at once with their own code, as a single run's.

In link mode (``link.from_env``) the same rules go through the job link instead of the
Kubernetes API and the AWS variables (``LinkMembers``): the link says whether a member is to
run, takes its progress and outcome, and presigns its input and output; a deleted member's
output is never completed there, so nothing is left to remove.
"""

import enum
import logging
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import torch

from stemkube_contract.batch import ITEM_FLAG, outcome_patch, skip_reason
from stemkube_contract.exitcodes import CRASH, FINAL_CODES, OK, TRANSIENT
from stemkube_contract.joblink import ProgressReport
from stemkube_contract.resource import GROUP, PLURAL, VERSION
from stemkube_separator import decode, inputs, link, logs, model, pipeline, progress, storage
from stemkube_separator.errors import SeparatorError, TransientError, UsageError
from stemkube_separator.link import Link, pool_manager
from stemkube_separator.linkstorage import STORE_TIMEOUT, LinkStore, Store
from stemkube_separator.locations import Location, parse_location
from stemkube_separator.options import Item, Options, member_options
from stemkube_separator.stages import (
    DECODE,
    ENCODE_TAIL,
    FETCH,
    FINISH,
    LOAD_MODEL,
    SEPARATE,
    SETUP,
    STORE,
    Both,
    Stages,
    merged,
)

log = logging.getLogger(__name__)

# Whether a member's last encodes, ZIP and upload run while the next member separates: unset,
# on a GPU (whose CPUs idle while it separates) and not on a CPU (where torch's threads keep
# every core busy: see pipeline.separate_to_files); "1" or "0" to choose.
OVERLAP_ENV = "STEMKUBE_BATCH_OVERLAP"
API_ATTEMPTS = 4  # reads and outcome writes, on errors other than 404 (or gone)
BACKOFF = 0.5  # seconds before the second try, doubled for each next one
API_TIMEOUT = 10  # seconds a request may take
# A retryable failure's message in the termination log: the members share its 1024 characters.
MAX_MESSAGE = 1024

T = TypeVar("T")

# The member's SeparationJob deleted (or being deleted) while it ran: the job link's upload
# raises it too, when the operator refuses to complete a deleted member's output.
MemberGoneError = link.MemberGoneError


class StoppingError(Exception):
    """The batch is stopping (SIGTERM): a member finishing in another thread stops too."""


class Fate(enum.Enum):
    ENDED = "ended"  # its outcome is written
    SKIPPED = "skipped"  # gone, being deleted or already ended before its turn: nothing done
    GONE = "gone"  # deleted while it ran: stopped, no result left
    RETRY = "retry"  # a retryable failure: no outcome; the pod's next try redoes it


@dataclass(frozen=True)
class MemberEnd:
    member: str  # NAMESPACE/NAME
    fate: Fate
    exit_code: int = OK
    message: str = ""


# --- the rules, as pure functions ------------------------------------------------------------


def has_outcome(code: int) -> bool:
    """Whether a member that ended with ``code`` gets an outcome: success and the final codes,
    which no other try would change."""
    return code == OK or code in FINAL_CODES


def retry_message(failed: Sequence[MemberEnd], limit: int = MAX_MESSAGE) -> str:
    """One line naming each member to retry and its error, each error shortened so that every
    member fits in ``limit`` characters (names alone longer than that: cut at the end)."""
    head = f"{len(failed)} member(s) failed and will be retried: "
    names = sum(len(end.member) + 4 for end in failed)  # ": " and "; " around each
    room = (limit - len(head) - names) // max(1, len(failed))
    parts = []
    for end in failed:
        message = " ".join(end.message.split()) or f"exit code {end.exit_code}"
        if len(message) > room:
            message = message[: room - 3] + "..." if room > 3 else ""
        parts.append(f"{end.member}: {message}" if message else end.member)
    return head + "; ".join(parts)


def batch_exit(ends: Sequence[MemberEnd]) -> tuple[int, str]:
    """The process's exit code and termination message: 0 when every member ended, was gone
    or skipped; the transient code, naming them, when some are to be retried (the Job runs the
    pod again, which skips the members that ended)."""
    failed = [end for end in ends if end.fate is Fate.RETRY]
    if not failed:
        return OK, ""
    return TRANSIENT, retry_message(failed)


def overlap_tail(env: Mapping[str, str], device: str) -> bool:
    """``STEMKUBE_BATCH_OVERLAP``: unset, on a GPU only; ``1`` or ``0`` to choose."""
    text = (env.get(OVERLAP_ENV) or "").strip()
    if not text:
        return device != "cpu"
    if text not in ("0", "1"):
        raise UsageError(f"{OVERLAP_ENV}={text!r}: expected 1 or 0")
    return text == "1"


def api_error(exc: BaseException) -> str:
    """An API server's error in one line (kubernetes' ApiException prints its headers)."""
    status = getattr(exc, "status", None)
    if isinstance(status, int) and status:
        return f"HTTP {status} {getattr(exc, 'reason', '') or ''}".strip()
    return f"{type(exc).__name__}: {exc}"


# --- the members' SeparationJobs --------------------------------------------------------------


class Jobs:
    """The members' SeparationJobs, through the status subresource only (what the separator's
    Role allows: get and patch on ``separationjobs/status``)."""

    def __init__(self, api: Any, sleep: Callable[[float], None] = time.sleep) -> None:
        self.api = api  # kubernetes.client.CustomObjectsApi, or a stand-in with its methods
        self.sleep = sleep

    def read(self, item: Item) -> dict[str, Any] | None:
        """The SeparationJob as it is now; None if it is gone."""
        return self._retrying(
            f"reading SeparationJob {item.member}",
            lambda: self.api.get_namespaced_custom_object_status(
                GROUP, VERSION, item.namespace, PLURAL, item.name, _request_timeout=API_TIMEOUT
            ),
        )

    def write_outcome(self, item: Item, code: int, message: str) -> dict[str, Any] | None:
        """Merge-patch the member's outcome; the SeparationJob written, None if it is gone."""
        return self._retrying(
            f"writing the outcome of SeparationJob {item.member}",
            lambda: self.api.patch_namespaced_custom_object_status(
                GROUP,
                VERSION,
                item.namespace,
                PLURAL,
                item.name,
                outcome_patch(code, message),
                _request_timeout=API_TIMEOUT,
            ),
        )

    def _retrying(self, what: str, call: Callable[[], Any]) -> dict[str, Any] | None:
        return retrying(what, lambda: _as_dict(call()), self.sleep)


def _as_dict(answer: Any) -> dict[str, Any]:
    return answer if isinstance(answer, dict) else {}


def retrying(what: str, call: Callable[[], T], sleep: Callable[[float], None]) -> T | None:
    """``call``'s answer, errors tried again with backoff; None when the API server answers
    404 (the SeparationJob is gone). A usage error is final: asking again asks the same."""
    delay = BACKOFF
    for attempt in range(1, API_ATTEMPTS + 1):
        try:
            return call()
        except UsageError:
            raise
        except Exception as exc:
            if progress.not_found(exc):
                return None
            reason = str(exc) if isinstance(exc, SeparatorError) else api_error(exc)
            if attempt == API_ATTEMPTS:
                raise TransientError(f"{what}: {reason}") from exc
            log.warning("%s failed (try %d of %d): %s", what, attempt, API_ATTEMPTS, reason)
            sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")  # the loop returns or raises


def kubernetes_api() -> Any:
    try:
        return progress.custom_objects_api()
    except Exception as exc:
        raise UsageError(
            f"{ITEM_FLAG} needs the Kubernetes API (KUBECONFIG, or the pod's service "
            f"account): {exc}"
        ) from None


@dataclass(frozen=True)
class Turn:
    """A member's SeparationJob as its turn finds it."""

    skip: str | None  # why it is not to run; None: it runs
    uid: str | None = None


class Members(Protocol):
    """Where the members' SeparationJobs and S3 locations are reached."""

    def look(self, item: Item) -> Turn:
        """Raises ``TransientError`` when it cannot be told."""

    def reporter(self, item: Item, uid: str | None) -> progress.StatusReporter: ...

    def write_outcome(self, item: Item, code: int, message: str, uid: str | None) -> bool:
        """Whether it was written; False: the SeparationJob is gone. Raises
        ``TransientError`` when it could not be told."""

    def store(self, item: Item) -> Store: ...

    def remove_result(self, target: Location) -> None:
        """A stored OUTPUT whose SeparationJob is gone."""


class ApiMembers:
    """Through the Kubernetes API and the AWS variables (the separator's own Role and
    credentials)."""

    def __init__(self, jobs: Jobs, api: Any, s3_client: storage.ClientFactory) -> None:
        self.jobs, self.api, self.s3_client = jobs, api, s3_client

    def look(self, item: Item) -> Turn:
        cr = self.jobs.read(item)
        return Turn(skip_reason(cr), ((cr or {}).get("metadata") or {}).get("uid"))

    def reporter(self, item: Item, uid: str | None) -> progress.StatusReporter:
        # With the uid read at its turn: a SeparationJob deleted and created again under the
        # same name while this member runs is not this member's.
        return progress.CrReporter(item.namespace, item.name, self.api, uid=uid)

    def write_outcome(self, item: Item, code: int, message: str, uid: str | None) -> bool:
        written = self.jobs.write_outcome(item, code, message)
        return written is not None and not progress.deleted(written, uid)

    def store(self, item: Item) -> Store:
        return self.s3_client

    def remove_result(self, target: Location) -> None:
        storage.delete_output(target, self.s3_client)


class LinkMembers:
    """The same through the job link (link mode: the pod holds no credentials)."""

    def __init__(self, linked: Link, sleep: Callable[[float], None] = time.sleep) -> None:
        self.link, self.sleep = linked, sleep
        self.http = pool_manager(STORE_TIMEOUT)  # the presigned URLs', shared by the members

    def look(self, item: Item) -> Turn:
        answer = self.link.member(item.name)
        return Turn(None if answer.run else answer.why or "not to run", answer.uid or None)

    def reporter(self, item: Item, uid: str | None) -> progress.StatusReporter:
        return progress.LinkReporter(self.link, item.namespace, item.name)

    def write_outcome(self, item: Item, code: int, message: str, uid: str | None) -> bool:
        report = ProgressReport(item.name, outcome=(code, message))
        gone = retrying(
            f"writing the outcome of SeparationJob {item.member}",
            lambda: self.link.progress(report),
            self.sleep,
        )
        return gone is False

    def store(self, item: Item) -> Store:
        return LinkStore(self.link, item.namespace, item.name, self.http)

    def remove_result(self, target: Location) -> None:
        # Nothing to remove: the link completes no gone member's upload, and the operator's
        # clean-up of a SeparationJob removes its finished output.
        pass


class MemberReporter:
    """A member's progress, to its SeparationJob; each update (the separation's progress
    callback among them) stops the member's work once it is gone, or the batch is stopping."""

    def __init__(
        self,
        inner: progress.StatusReporter,
        item: Item,
        stopping: threading.Event,
        uid: str | None = None,
    ) -> None:
        self.inner, self.item, self.stopping, self.uid = inner, item, stopping, uid

    @property
    def gone(self) -> bool:
        return self.inner.gone.is_set()

    def check(self) -> None:
        if self.gone:
            raise MemberGoneError(f"SeparationJob {self.item.member} was deleted")
        if self.stopping.is_set():
            raise StoppingError("the batch is stopping")

    def update(self, percent: int) -> None:
        self.check()
        self.inner.update(percent)

    def audio(self, seconds: float) -> None:
        self.inner.audio(seconds)

    def close(self) -> None:
        self.inner.close()


# --- the next song, in another thread ---------------------------------------------------------


class Milestones:
    """The stages another thread passes in a member's work; the thread waiting for that work
    laps them as its own waiting time once each is passed."""

    def __init__(self, names: Sequence[str]) -> None:
        self.events = {name: threading.Event() for name in names}

    def passed(self, name: str) -> None:
        self.events[name].set()

    def all_passed(self) -> None:
        for event in self.events.values():
            event.set()

    def wait(self, lap: Callable[[str], object], future: "Future[T]") -> T:
        for name, event in self.events.items():
            event.wait()
            lap(name)
        return future.result()


@dataclass
class Song:
    """A member's song, fetched and decoded into its temporary folder."""

    workdir: Path
    audio: decode.Audio | None
    seconds: float


class Prefetch:
    """A member's song being fetched and decoded in the batch's input thread (or a reason to
    skip the member, found before downloading anything)."""

    def __init__(
        self, pool: ThreadPoolExecutor, item: Item, load: "Callable[[Prefetch], Song | str]"
    ) -> None:
        self.item = item
        self.milestones = Milestones((FETCH, DECODE))
        self.dropped = threading.Event()
        self.stages = Stages()  # the member's fetch and decode, in the input thread
        self.future = pool.submit(self._run, load)

    def _run(self, load: "Callable[[Prefetch], Song | str]") -> Song | str:
        self.stages = Stages()  # from when the thread takes it up
        try:
            return load(self)
        finally:
            self.milestones.all_passed()

    def take(self, lap: Callable[[str], object]) -> Song | str:
        return self.milestones.wait(lap, self.future)

    def drop(self) -> None:
        """Not needed after all: its folder goes once it is done (now, or when it ends)."""
        self.dropped.set()
        self.future.cancel()
        self.future.add_done_callback(_remove_song)


def _remove_song(future: "Future[Song | str]") -> None:
    if future.cancelled() or future.exception() is not None:
        return
    song = future.result()
    if isinstance(song, Song):
        shutil.rmtree(song.workdir, ignore_errors=True)


# --- one member -------------------------------------------------------------------------------


class MemberRun:
    """One member from its turn to its end: separated in the batch's main thread, finished
    (last encodes, ZIP, upload, outcome) there or, on a GPU, in the batch's finishing thread."""

    def __init__(
        self, batch: "Batch", item: Item, reporter: MemberReporter, stages: Stages
    ) -> None:
        self.batch, self.item, self.reporter = batch, item, reporter
        self.opts = member_options(batch.opts, item)
        self.stages = stages  # the member's own, from its turn
        self.parts = [stages]  # and its fetch and decode, wherever they ran
        self.song: Song | None = None
        self.files: dict[str, Path] = {}
        self.target: Location | None = None
        self.stored = False

    # In the main thread.
    def separate(self, prefetch: Prefetch, laps: Both) -> "pipeline.StemEncoders":
        """Its song (waiting for the input thread), separated; its stems left encoding."""
        ready, batch = self.batch.ready, self.batch
        self.reporter.update(0)
        self.parts.append(prefetch.stages)
        song = prefetch.take(laps.wait)
        if not isinstance(song, Song):  # skipped when prefetched, not now: load it again
            prefetch = batch.prefetch(self.item, read=False)
            self.parts[-1] = prefetch.stages
            song = prefetch.take(laps.wait)
            assert isinstance(song, Song)
        self.song = song
        self.reporter.audio(song.seconds)
        self.reporter.update(pipeline.DECODED)
        self.target = parse_location(self.item.output)
        self.files = pipeline.stem_files(ready.stems, self.opts.format, song.workdir)
        encoders = pipeline.StemEncoders(
            ready.separator, self.files, self.opts, ready.threads, batch.env
        )
        try:
            assert song.audio is not None
            audio, song.audio = torch.from_numpy(song.audio), None  # separate() owns it now
            pipeline.separate_chunks(
                ready.separator,
                audio,
                encoders,
                self.opts,
                ready.device,
                batch.env,
                self.reporter,
                laps,
                ready.autocast,
            )
        except BaseException as exc:
            laps.lap(SEPARATE)  # the time up to the failure, rather than in finish
            encoders.close(exc)
            raise
        return encoders

    # In the main thread, or the finishing thread.
    def finish(
        self,
        encoders: "pipeline.StemEncoders",
        laps: Both | Stages,
        milestones: Milestones | None = None,
    ) -> MemberEnd:
        """The last encodes, the ZIP to OUTPUT, and the member's end."""

        def passed(name: str) -> None:
            laps.lap(name)
            if milestones is not None:
                milestones.passed(name)

        error: BaseException | None = None
        stage = ENCODE_TAIL  # a failure's time goes to the stage it happened in
        try:
            with encoders:
                encoders.complete()
            passed(ENCODE_TAIL)
            stage = STORE
            self.reporter.update(pipeline.ENCODED)
            assert self.target is not None
            store = self.batch.members.store(self.item)
            pipeline.store(self.files, self.target, store, self.reporter.check)
            self.stored = True
            log.info("wrote %s (%d stems)", self.target, len(self.files))
            passed(STORE)
            stage = FINISH
            self.reporter.update(100)
        except BaseException as exc:
            error = exc
            if stage != FINISH:
                passed(stage)
        return self.end(error, passed)

    def end(self, error: BaseException | None, passed: Callable[[str], object]) -> MemberEnd:
        """Close its progress, write its outcome (or not), remove what it leaves; re-raise
        what is not the member's own failure (SIGTERM)."""
        try:
            self.reporter.close()  # the last write: it also tells whether the member is still there
            end = self._decide(error)
        finally:
            if self.song is not None:
                shutil.rmtree(self.song.workdir, ignore_errors=True)
            passed(FINISH)
        if error is not None and not isinstance(error, Exception):
            raise error
        timings = merged(*self.parts)
        log.info(
            "member %s finished in %.2f s",
            self.item.member,
            sum(timings.values()),
            extra={
                "member": self.item.member,
                "fate": end.fate.value,
                "exit_code": end.exit_code,
                "timings": timings,
            },
        )
        return end

    def _decide(self, error: BaseException | None) -> MemberEnd:
        member = self.item.member
        if self.reporter.gone and (error is None or isinstance(error, Exception)):
            # Whatever else happened, nobody waits for this member any more.
            error = MemberGoneError(f"SeparationJob {member} was deleted")
        if isinstance(error, MemberGoneError):
            log.info("stopped: %s; no result is left", error, extra={"member": member})
            self._remove_result()
            return MemberEnd(member, Fate.GONE)
        if error is None:
            return self._outcome(OK, "")
        if isinstance(error, StoppingError) or not isinstance(error, Exception):
            return MemberEnd(member, Fate.RETRY, TRANSIENT, "stopped before it finished")
        if isinstance(error, SeparatorError):
            code, message = error.exit_code, str(error)
        else:
            log.error("unexpected error", exc_info=error)
            code, message = CRASH, f"unexpected error: {type(error).__name__}: {error}"
        log.error(" ".join(message.split()), extra={"exit_code": code, "member": member})
        if has_outcome(code):
            return self._outcome(code, message)
        return MemberEnd(member, Fate.RETRY, code, message)

    def _outcome(self, code: int, message: str) -> MemberEnd:
        member = self.item.member
        try:
            written = self.batch.members.write_outcome(self.item, code, message, self.reporter.uid)
        except TransientError as exc:
            log.error("%s", exc, extra={"member": member})
            return MemberEnd(member, Fate.RETRY, exc.exit_code, str(exc))
        if not written:
            log.info("its SeparationJob is gone: no outcome", extra={"member": member})
            if code == OK:
                self._remove_result()
            return MemberEnd(member, Fate.GONE)
        log.info("outcome written: exit code %d", code, extra={"member": member, "exit_code": code})
        return MemberEnd(member, Fate.ENDED, code, message)

    def _remove_result(self) -> None:
        if self.stored and self.target is not None:
            self.batch.members.remove_result(self.target)


# --- the batch --------------------------------------------------------------------------------


@dataclass
class Finishing:
    """A member finishing in the finishing thread."""

    future: "Future[MemberEnd]"
    milestones: Milestones


class Batch:
    def __init__(
        self,
        opts: Options,
        env: Mapping[str, str],
        stages: Stages,
        members: Members,
        ready: pipeline.Ready,
        overlap: bool,
    ) -> None:
        self.opts, self.env, self.stages = opts, env, stages
        self.members, self.ready = members, ready
        self.overlap = overlap
        self.stopping = threading.Event()
        # One song ahead: the next member's input is fetched and decoded while one separates.
        self.inputs = ThreadPoolExecutor(1, thread_name_prefix="input")
        # At most one member finishing while the next one separates (a GPU's batch).
        self.finisher = ThreadPoolExecutor(1, thread_name_prefix="finish")
        self.prefetched: dict[int, Prefetch] = {}
        self.finishing: Finishing | None = None

    def run(self) -> tuple[int, str]:
        ends: list[MemberEnd | Future[MemberEnd]] = []
        try:
            for index in range(len(self.opts.items)):
                ends.append(self._turn(index))
            self._wait_finishing(self.stages.lap)
        except BaseException:
            self.stopping.set()  # a member finishing in the other thread stops, no outcome
            raise
        finally:
            self._close()
        results = [end if isinstance(end, MemberEnd) else _end_of(end) for end in ends]
        self._summary(results)
        return batch_exit(results)

    # The input thread's work.
    def prefetch(self, item: Item, read: bool = True) -> Prefetch:
        return Prefetch(self.inputs, item, lambda p: self._load_song(p, read))

    def _load_song(self, prefetch: Prefetch, read: bool) -> Song | str:
        item, stages = prefetch.item, prefetch.stages
        with logs.job(item.name):
            if read:
                try:
                    reason = self.members.look(item).skip
                except TransientError:
                    reason = None  # its turn reads it again
                if reason is not None:
                    return reason
            # As a single run: both locations checked before anything is fetched.
            source = parse_location(item.input)
            parse_location(item.output)
            stages.idle()  # the reading above is the member's setup, counted at its turn
            workdir = Path(tempfile.mkdtemp(prefix="stemkube-"))
            stage = FETCH  # a failure's time goes to the stage it happened in
            try:
                store = self.members.store(item)
                local = inputs.fetch_input(source, workdir, store, self.opts.max_file_size)
                stages.lap(FETCH)
                prefetch.milestones.passed(FETCH)
                stage = DECODE
                if prefetch.dropped.is_set():
                    raise StoppingError("not needed any more")
                audio, seconds = inputs.decode_input(
                    local, workdir, self.ready.separator.samplerate, self.opts.max_duration
                )
                stages.lap(DECODE)
            except BaseException:
                stages.lap(stage)
                shutil.rmtree(workdir, ignore_errors=True)
                raise
            return Song(workdir, audio, seconds)

    def _prefetch_at(self, index: int) -> Prefetch | None:
        if index >= len(self.opts.items):
            return None
        if index not in self.prefetched:
            self.prefetched[index] = self.prefetch(self.opts.items[index])
        return self.prefetched[index]

    # The main thread's work.
    def _turn(self, index: int) -> "MemberEnd | Future[MemberEnd]":
        item = self.opts.items[index]
        member = Stages(origin=self.stages.clock)
        laps = Both(self.stages, member)
        with logs.job(item.name):
            self._prefetch_at(index)
            try:
                turn = self.members.look(item)
            except TransientError as exc:
                self._forget(index)
                laps.lap(SETUP)
                log.error("%s", exc, extra={"member": item.member})
                return MemberEnd(item.member, Fate.RETRY, exc.exit_code, str(exc))
            reason = turn.skip
            if reason is not None:
                self._forget(index)
                log.info("skipping %s: %s", item.member, reason,
                         extra={"member": item.member, "skipped": reason})  # fmt: skip
                laps.lap(SETUP)
                return MemberEnd(item.member, Fate.SKIPPED, message=reason or "")
            reporter = self._reporter(item, turn.uid)
            log.info("separating %s into %s", item.input, item.output,
                     extra={"member": item.member, "model": self.opts.model})  # fmt: skip
            laps.lap(SETUP)
            self._prefetch_at(index + 1)  # the next song, while this one separates
            run = MemberRun(self, item, reporter, member)
            try:
                encoders = run.separate(self.prefetched[index], laps)
            except BaseException as exc:
                self._forget(index)
                return run.end(exc, laps.lap)
            del self.prefetched[index]  # its song's folder is the run's now
            if not self.overlap:
                return run.finish(encoders, laps)
            return self._hand_over(run, encoders, laps)

    def _forget(self, index: int) -> None:
        self.prefetched.pop(index).drop()

    def _reporter(self, item: Item, uid: str | None) -> MemberReporter:
        inner = self.members.reporter(item, uid)
        return MemberReporter(inner, item, self.stopping, uid)

    def _hand_over(
        self, run: MemberRun, encoders: "pipeline.StemEncoders", laps: Both
    ) -> "Future[MemberEnd]":
        """The member's last encodes, upload and outcome to the finishing thread, once the
        previous member's are done (their wait is the process's, not this member's)."""
        try:
            self._wait_finishing(laps.wait)
        except BaseException as exc:  # SIGTERM while waiting: this member ends here too
            encoders.close(exc)
            run.end(exc, laps.lap)
            raise
        milestones = Milestones((ENCODE_TAIL, STORE, FINISH))
        item = run.item

        def finish() -> MemberEnd:
            with logs.job(item.name):
                try:
                    return run.finish(encoders, run.stages, milestones)
                finally:
                    milestones.all_passed()

        future = self.finisher.submit(finish)
        self.finishing = Finishing(future, milestones)
        return future

    def _wait_finishing(self, lap: Callable[[str], object]) -> None:
        if self.finishing is not None:
            finishing, self.finishing = self.finishing, None
            finishing.milestones.wait(lap, finishing.future)

    def _close(self) -> None:
        self.finisher.shutdown(wait=True)  # a member finishing ends (stopping: at once)
        for prefetch in self.prefetched.values():
            prefetch.drop()
        self.inputs.shutdown(wait=False, cancel_futures=True)

    def _summary(self, ends: Sequence[MemberEnd]) -> None:
        by_fate = {fate.value: [end.member for end in ends if end.fate is fate] for fate in Fate}
        log.info(
            "batch of %d: %s",
            len(ends),
            ", ".join(f"{len(names)} {fate}" for fate, names in by_fate.items()),
            extra={"members": by_fate},
        )


def _end_of(future: "Future[MemberEnd]") -> MemberEnd:
    try:
        return future.result()
    except Exception as exc:  # the finishing thread's own failure: a bug
        log.error("unexpected error finishing a member", exc_info=exc)
        return MemberEnd("?", Fate.RETRY, CRASH, f"unexpected error: {type(exc).__name__}: {exc}")


def run(
    opts: Options,
    env: Mapping[str, str],
    stages: Stages,
    loaded: model.Loaded | None = None,
    api: Any = None,
) -> tuple[int, str]:
    """The batch of ``opts.items``: the process's exit code and termination message. What
    concerns every member (the Kubernetes configuration, the storage settings, the model, the
    options) raises, as in a single run. ``api``: a CustomObjectsApi (default: configured as
    progress writes are); none is needed in link mode (``link.from_env``)."""
    members = batch_members(env, opts, api)
    stages.lap(SETUP)
    ready = pipeline.load(opts, env, loaded)
    # Settings each member would otherwise refuse in turn: refused once, for all.
    pipeline.chunk_seconds(env)
    pipeline.mp3_pieces(env, ready.threads, len(ready.stems))
    overlap = overlap_tail(env, ready.device)
    stages.lap(LOAD_MODEL)
    batch = Batch(opts, env, stages, members, ready, overlap)
    return batch.run()


def batch_members(env: Mapping[str, str], opts: Options, api: Any = None) -> Members:
    linked = link.from_env(env)
    if linked is not None:
        return LinkMembers(linked)
    api = kubernetes_api() if api is None else api
    locations = [url for item in opts.items for url in (item.input, item.output)]
    return ApiMembers(Jobs(api), api, inputs.s3_clients(env, *locations))
