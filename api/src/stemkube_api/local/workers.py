"""Local mode's workers: pending jobs run oldest first, at most ``workers`` at once. Each worker
slot keeps one ``stemkube-separate --serve`` process (the Job image's program), started on the
slot's first job and given one job after another, each with the options, progress file, exit
code and termination message a process per job had; the process keeps the model loaded between
jobs. One thread starts, follows and reaps the jobs, and removes finished jobs past their TTL.

A worker ends when its job is cancelled (the slot's next job starts a fresh one), when the
service stops, or if it dies; an idle one keeps running, holding its model."""

import contextlib
import datetime
import logging
import os
import shutil
import signal
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

from stemkube_api.jobs import COMPLETED, FAILED, PENDING, PROCESSING
from stemkube_api.local import rules
from stemkube_api.local.records import JobTable
from stemkube_api.local.settings import LocalSettings
from stemkube_api.local.store import LocalStore
from stemkube_api.local.worker_process import GRACE, WorkerProcess
from stemkube_contract.limits import MAX_FILE_SIZE_ENV, max_file_size_from_env
from stemkube_contract.progressfile import Progress, parse_progress

log = logging.getLogger(__name__)

TICK = 0.25  # seconds between two looks at the workers when nothing wakes the loop


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def progress_file(workdir: Path) -> Path:
    return workdir / "progress"


def termination_log(workdir: Path) -> Path:
    return workdir / "termination-log"


@dataclass
class Running:
    row: rules.JobRow
    worker: WorkerProcess
    workdir: Path
    slot: int


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return ""


def _is_our_separator(pid: int, job_id: str, tag: str) -> bool:
    """Only a process whose command line shows it is ours is ours to kill: a pid stored before
    a crash may belong to anything by now."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return rules.is_our_separator(cmdline, job_id, tag)


def _kill_leftover(pid: int, job_id: str, tag: str) -> None:
    if not _is_our_separator(pid, job_id, tag):
        return
    log.warning("job %s: killing its separator (pid %d) left from the last run", job_id, pid)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + GRACE
    while _is_our_separator(pid, job_id, tag) and time.monotonic() < deadline:
        time.sleep(0.05)


class Workers:
    def __init__(self, settings: LocalSettings, table: JobTable, store: LocalStore) -> None:
        self.settings = settings
        self.table = table
        self.store = store
        self._running: dict[str, Running] = {}
        # The loop's alone (and stop's, once the loop ended): the worker of each slot, busy or
        # idle; and workers told to end, reaped once they did.
        self._slots: dict[int, WorkerProcess] = {}
        self._retiring: list[WorkerProcess] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="local-workers", daemon=True)
        self._next_expiry = 0.0

    # Life cycle ------------------------------------------------------------------------------

    def recover(self) -> None:
        """Before the first job starts: a job left ``processing`` by a previous run runs again
        (or fails, past its attempts); half-written files and work folders go."""
        for row in self.table.with_status(PROCESSING):
            if row.pid:
                _kill_leftover(row.pid, row.job_id, self._tag)
            next_state = rules.interrupted(row, self.settings.max_attempts)
            self.table.save(
                replace(
                    row,
                    status=next_state.status,
                    reason=next_state.reason,
                    message=next_state.message,
                    pid=None,
                    progress=0,
                    completed_at=_now() if next_state.status == FAILED else None,
                ),
                only_if_status=PROCESSING,
            )
            log.warning("job %s: %s", row.job_id, next_state.message)
        self.store.remove_partials()
        shutil.rmtree(self.settings.work, ignore_errors=True)

    def start(self) -> None:
        for folder in (self.settings.work, self.settings.logs):
            folder.mkdir(parents=True, exist_ok=True)
        self._thread.start()

    def stop(self) -> None:
        """Stops the loop, then the workers: their jobs run again on the next start, and this
        stop does not count as one of their attempts."""
        self._stop.set()
        self._wake.set()
        self._thread.join()
        with self._lock:
            running = list(self._running.values())
            self._running.clear()
        for job in running:
            job.worker.terminate()
        workers = [*self._slots.values(), *self._retiring]
        self._slots.clear()
        self._retiring.clear()
        for worker in workers:
            worker.retire()
        for worker in workers:
            worker.wait(GRACE)
            worker.release()
        for job in running:
            self.table.save(
                replace(
                    job.row,
                    status=PENDING,
                    attempts=max(0, job.row.attempts - 1),
                    pid=None,
                    progress=0,
                    reason="Interrupted",
                    message="the service stopped while this job ran; it runs again on start",
                ),
                only_if_status=PROCESSING,
            )
            shutil.rmtree(job.workdir, ignore_errors=True)
            log.info("job %s: stopped with the service; it runs again on start", job.row.job_id)

    def alive(self) -> bool:
        return self._thread.is_alive()

    def wake(self) -> None:
        self._wake.set()

    def cancel(self, job_id: str) -> None:
        """Stops the job's worker if the job runs (its row is already gone): the job ends as a
        process per job did on SIGTERM, and the slot's next job starts a fresh worker."""
        with self._lock:
            job = self._running.get(job_id)
            if job is not None:
                job.worker.terminate()
        self._wake.set()

    @property
    def _tag(self) -> str:
        """What marks this data folder's workers in their command lines."""
        return str(self.settings.data_dir.absolute())

    # The loop --------------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._reap()
                self._follow_progress()
                self._admit()
                self._expire()
            except Exception:
                log.exception("local workers: a pass failed; trying again")
            self._wake.wait(TICK)
            self._wake.clear()

    def _free_slot(self) -> int | None:
        taken = {job.slot for job in self._running.values()}
        return next((s for s in range(self.settings.workers) if s not in taken), None)

    def _admit(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                slot = self._free_slot()
            if slot is None:
                return
            row = self.table.next_pending()
            if row is None:
                return
            self._launch(row, slot)

    def _launch(self, row: rules.JobRow, slot: int) -> None:
        workdir = self.settings.work / row.job_id
        shutil.rmtree(workdir, ignore_errors=True)
        workdir.mkdir(parents=True)
        # A URL job's URL goes in the request line on the worker's standard input (not in any
        # process's arguments, which ps shows); the worker fetches it, its address checked.
        argv = rules.separator_command(
            row,
            [],
            rules.source_url(row) or self.store.path(row.input_key),
            self.store.path(row.result_key),
            progress_file(workdir),
            termination_log(workdir),
            self.settings.model_repo,
            self.settings.models,
            self.settings.precision,
        )
        kept = self._slots.get(slot)
        try:
            worker = self._hand_over(slot, argv, self.settings.logs / f"{row.job_id}.log")
        except OSError as exc:
            failed = replace(
                row,
                status=FAILED,
                reason="SeparatorError",
                message=f"cannot start the separator ({self.settings.program[0]}): {exc}",
                completed_at=_now(),
            )
            self.table.save(failed, only_if_status=PENDING)
            log.error("job %s: %s", row.job_id, failed.message)
            return
        now = _now()
        running_row = rules.started(row, worker.pid, now)
        job = Running(running_row, worker, workdir, slot)
        with self._lock:
            self._running[row.job_id] = job
        if not self.table.save(running_row, only_if_status=PENDING):
            worker.terminate()  # deleted between our read and now: reaped as cancelled
            return
        log.info(
            "job %s: separating on worker %d (%s pid %d, attempt %d)",
            row.job_id,
            slot,
            "its process," if worker is kept else "a new process,",
            worker.pid,
            running_row.attempts,
        )

    def _hand_over(self, slot: int, argv: list[str], log_path: Path) -> WorkerProcess:
        """The job to the slot's worker; to a new one if the slot has none, or if its worker
        ended while idle. Raises OSError if no worker can be started."""
        worker = self._slots.get(slot)
        if worker is not None and worker.send(argv, log_path):
            return worker
        if worker is not None:
            log.warning("worker %d (pid %d) ended while idle; starting another", slot, worker.pid)
            self._retire(slot)
        worker = WorkerProcess.start(
            rules.serve_command(self.settings.program, self._tag), self._env(slot), log_path
        )
        self._slots[slot] = worker
        # Refused only if it ended already: its exit code then says what became of the job.
        worker.send(argv, log_path)
        return worker

    def _env(self, slot: int) -> dict[str, str]:
        env = dict(os.environ)
        # The upload limit the API enforces, in bytes, stated to the separator (which refuses a
        # larger input) rather than left to its own reading of the variable.
        env[MAX_FILE_SIZE_ENV] = str(max_file_size_from_env(env))
        if self.settings.gpus:
            env["CUDA_VISIBLE_DEVICES"] = self.settings.gpus[slot % len(self.settings.gpus)]
        return env

    def _retire(self, slot: int) -> None:
        """The slot's worker takes no more jobs: it ends (at once if idle) and is reaped."""
        worker = self._slots.pop(slot, None)
        if worker is not None:
            worker.retire()
            self._retiring.append(worker)

    def _follow_progress(self) -> None:
        with self._lock:
            running = list(self._running.values())
        for job in running:
            said = self._take_progress(job)
            if said is not None:
                self.table.set_progress(job.row.job_id, min(99, said.percent))

    def _take_progress(self, job: Running) -> Progress | None:
        """What the job's progress file says; the song's length, once there, to the ledger."""
        said = parse_progress(_read(progress_file(job.workdir)))
        if said is not None and said.audio_seconds is not None:
            self.table.record_audio(job.row.job_id, said.audio_seconds, _now())
        return said

    def _reap(self) -> None:
        with self._lock:
            running = list(self._running.values())
        for job in running:
            code = self._ended(job)
            if code is None:
                continue
            with self._lock:
                self._running.pop(job.row.job_id, None)
            self._finish(job, code)
            self._wake.set()  # a slot is free
        self._reap_idle()
        self._reap_retired()

    def _ended(self, job: Running) -> int | None:
        """The job's exit code once it ended: its worker's answer, or the worker's own exit
        code if it ended without one (killed, crashed: as a process per job's would say)."""
        worker = job.worker
        code = worker.reply()
        if code is not None:
            if worker.terminated:  # it ends after this answer
                self._retire(job.slot)
            return code
        exited = worker.poll()
        if exited is None:
            worker.kill_if_overdue()
            return None
        self._retire(job.slot)
        code = worker.reply()  # an answer written just before it ended
        return exited if code is None else code

    def _reap_idle(self) -> None:
        """Idle workers that ended (killed from outside, out of memory): their slot starts a
        fresh one for its next job."""
        with self._lock:
            busy = {job.slot for job in self._running.values()}
        for slot, worker in list(self._slots.items()):
            if slot not in busy and worker.poll() is not None:
                log.warning("worker %d (pid %d) ended while idle", slot, worker.pid)
                self._retire(slot)

    def _reap_retired(self) -> None:
        for worker in list(self._retiring):
            if worker.poll() is None:
                worker.kill_if_overdue()
                continue
            worker.release()
            self._retiring.remove(worker)

    def _finish(self, job: Running, code: int) -> None:
        job_id = job.row.job_id
        said = _read(termination_log(job.workdir))
        self._take_progress(job)  # a song shorter than a poll is counted too
        shutil.rmtree(job.workdir, ignore_errors=True)
        if self.table.get(job_id) is None:
            # Deleted while it ran: whatever it wrote goes too.
            for key in (job.row.result_key, job.row.input_key):
                if key:  # a URL job has no input of its own
                    self.store.delete(key)
            log.info("job %s: cancelled (separator exit %s)", job_id, code)
            return
        result = rules.outcome(code, said, job.row.attempts, self.settings.max_attempts)
        size = None
        if result.status == COMPLETED:
            info = self.store.stat(job.row.result_key)
            if info is None:
                result = rules.Outcome(
                    FAILED, "SeparatorError", "the separator exited 0 but wrote no result"
                )
            else:
                size = info.size
        finished = result.status in (COMPLETED, FAILED)
        self.table.save(
            replace(
                job.row,
                status=result.status,
                reason=result.reason,
                message=result.message,
                pid=None,
                progress=100 if result.status == COMPLETED else 0,
                completed_at=_now() if finished else None,
                result_size=size,
            ),
            only_if_status=PROCESSING,
        )
        level = logging.INFO if result.status == COMPLETED else logging.WARNING
        log.log(level, "job %s: %s (%s): %s", job_id, result.status, result.reason, result.message)

    def _expire(self) -> None:
        if time.monotonic() < self._next_expiry:
            return
        self._next_expiry = time.monotonic() + self.settings.expiry_interval
        for row in self.table.finished_before(_now() - self.settings.ttl):
            if self.table.delete(row.job_id):
                remove_files(self.settings, self.store, row)
                log.info("job %s: removed, finished over %s ago", row.job_id, self.settings.ttl)


def remove_files(settings: LocalSettings, store: LocalStore, row: rules.JobRow) -> None:
    for key in (row.input_key, row.result_key):
        if key:  # a URL job has no input of its own
            store.delete(key)
    (settings.logs / f"{row.job_id}.log").unlink(missing_ok=True)
