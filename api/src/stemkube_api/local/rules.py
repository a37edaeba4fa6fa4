"""The pure rules of local mode: a job row as the API shows it, the separator's command line
for a row and its workers', which processes are ours, and what a finished separation means for
its job."""

import datetime
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from stemkube_api.interfaces import NewJob
from stemkube_api.jobs import (
    COMPLETED,
    FAILED,
    PENDING,
    PROCESSING,
    JobRecord,
    result_key,
)
from stemkube_contract import exitcodes
from stemkube_contract import options as catalogue
from stemkube_contract.batch import SERVE_FLAG
from stemkube_contract.models import Catalog
from stemkube_contract.options import DEFAULT_PRECISION, Options
from stemkube_contract.timefmt import human_duration

SIGNALS = {9: "SIGKILL", 15: "SIGTERM", 6: "SIGABRT", 11: "SIGSEGV"}

JOB_ID_FLAG = "--job-id"


@dataclass(frozen=True)
class JobRow:
    """One job as the SQLite table holds it."""

    job_id: str
    created_at: datetime.datetime
    filename: str
    options: Options  # every option, defaults filled in when the job was created
    input_key: str
    result_key: str
    status: str = PENDING
    progress: int = 0
    attempts: int = 0
    started_at: datetime.datetime | None = None
    completed_at: datetime.datetime | None = None
    reason: str | None = None
    message: str | None = None
    result_size: int | None = None
    pid: int | None = None


def new_row(job: NewJob, models: Catalog, now: datetime.datetime) -> JobRow:
    """The job as it will run: the defaults of today are kept with it, so that a restart with
    another default model runs it as it was asked. A job from a URL keeps its URL beside its
    options (``SOURCE_URL_KEY``: the row has no column of its own for it)."""
    options = catalogue.effective(job.request, models)
    if job.source_url:
        options[catalogue.SOURCE_URL_KEY] = job.source_url
    return JobRow(
        job_id=job.job_id,
        created_at=now,
        filename=job.filename,
        options=options,
        input_key=job.input_key,
        result_key=result_key(job.job_id),
        reason="Queued",
        message="waiting for a free worker",
    )


def source_url(row: JobRow) -> str | None:
    """The URL a job's song is fetched from; None for an upload."""
    value = row.options.get(catalogue.SOURCE_URL_KEY)
    return value if isinstance(value, str) and value else None


def record_of(row: JobRow, models: Catalog) -> JobRecord:
    duration = None
    if row.started_at and row.completed_at:
        duration = human_duration((row.completed_at - row.started_at).total_seconds())
    return JobRecord(
        job_id=row.job_id,
        status=row.status,
        filename=row.filename,
        created_at=row.created_at,
        progress=100 if row.status == COMPLETED else row.progress,
        options=catalogue.effective(row.options, models),
        stems=catalogue.stems_of(row.options, models),
        input_key=row.input_key,
        result_key=row.result_key,
        started_at=row.started_at,
        completed_at=row.completed_at,
        duration=duration,
        reason=row.reason,
        message=row.message,
        result_size=row.result_size,
    )


def separator_command(
    row: JobRow,
    program: list[str],
    input_path: Path | str,
    output_path: Path,
    progress_file: Path,
    termination_log: Path,
    model_repo: Path | None,
    models: Catalog,
    precision: str = DEFAULT_PRECISION,
) -> list[str]:
    """``stemkube-separate`` for a job: the same options the operator gives a Job's pod, from
    the same catalogue. ``input_path``: a stored file, or a job's source URL (this command
    line reaches a worker on its standard input, never a process's arguments: see
    ``workers``)."""
    command = [
        *program,
        str(input_path),
        str(output_path),
        *catalogue.separator_args(row.options, models),
        f"--precision={precision}",
        f"--progress-file={progress_file}",
        f"--termination-log={termination_log}",
        f"--job-id={row.job_id}",
    ]
    model = models.get(str(row.options["model"]))
    repo = (model.repo if model else None) or model_repo
    if repo is not None:
        command.append(f"--model-repo={repo}")
    return command


def serve_command(program: Sequence[str], tag: str) -> list[str]:
    """A worker slot's ``stemkube-separate --serve``: ``--tag`` marks it as this data folder's
    (its own command line says so after a crash of the API)."""
    return [*program, SERVE_FLAG, f"--tag={tag}"]


def is_our_separator(args: Sequence[bytes], job_id: str, tag: str) -> bool:
    """Whether a process's command line (its arguments, as /proc/PID/cmdline holds them) shows
    a separator of ours for the job: a single run that names it (``--job-id``), or a worker of
    this data folder (at start every one left is a leftover, whatever it runs)."""
    if f"{JOB_ID_FLAG}={job_id}".encode() in args:
        return True
    return SERVE_FLAG.encode() in args and f"--tag={tag}".encode() in args


@dataclass(frozen=True)
class Outcome:
    """What becomes of a job whose separator exited: ``status`` PENDING means run it again."""

    status: str
    reason: str
    message: str


def _exit_words(code: int) -> str:
    if code < 0:
        name = SIGNALS.get(-code, f"signal {-code}")
        hint = " (out of memory?)" if -code == 9 else ""
        return f"killed by {name}{hint}"
    return f"exit code {code}"


def outcome(code: int, said: str, attempts: int, max_attempts: int) -> Outcome:
    """The job's next state after its separator exited with ``code`` on attempt ``attempts``,
    leaving ``said`` in its termination log: the contract's table, as the operator reads it.
    A final code fails at once; anything else is tried up to ``max_attempts`` times, as the
    operator's Job backoff does."""
    said = " ".join(said.split())
    if code == exitcodes.OK:
        return Outcome(COMPLETED, "Completed", "the stems are ready")
    failed = exitcodes.failure(code, said, attempts, _exit_words(code))
    if failed.retryable and attempts < max_attempts:
        detail = said or _exit_words(code)
        return Outcome(
            PENDING, "Retrying", f"attempt {attempts} of {max_attempts} failed: {detail}"
        )
    return Outcome(FAILED, failed.reason, failed.message)


def interrupted(row: JobRow, max_attempts: int) -> Outcome:
    """A job found ``processing`` at start: the service stopped (or died) while it ran."""
    if row.attempts < max_attempts:
        return Outcome(
            PENDING,
            "Interrupted",
            "the service stopped while this job ran; it runs again",
        )
    return Outcome(
        FAILED,
        "Interrupted",
        f"the service stopped while this job ran, {row.attempts} time(s); not trying again",
    )


def started(row: JobRow, pid: int, now: datetime.datetime) -> JobRow:
    return replace(
        row,
        status=PROCESSING,
        attempts=row.attempts + 1,
        started_at=row.started_at or now,
        pid=pid,
        progress=0,
        reason="Running",
        message=f"separating (attempt {row.attempts + 1})",
    )
