"""The pure rules of local mode: a job row as the API shows it, the separator's command line
for a row, and what a finished separator process means for its job."""

import datetime
from dataclasses import dataclass, replace
from pathlib import Path

from stemkube_api.interfaces import NewJob
from stemkube_api.jobs import COMPLETED, FAILED, PENDING, PROCESSING, JobRecord, result_key
from stemkube_api.options import DEFAULT_BITRATE, DEFAULT_FORMAT, output_stems

# The separator's exit codes (its contract with whoever runs it: the operator or us).
EXIT_OK, EXIT_USAGE, EXIT_INVALID_INPUT, EXIT_TRANSIENT = 0, 2, 3, 75
SIGNALS = {9: "SIGKILL", 15: "SIGTERM", 6: "SIGABRT", 11: "SIGSEGV"}


@dataclass(frozen=True)
class JobRow:
    """One job as the SQLite table holds it."""

    job_id: str
    created_at: datetime.datetime
    filename: str
    model: str
    format: str
    input_key: str
    result_key: str
    status: str = PENDING
    stems: tuple[str, ...] | None = None
    two_stems: str | None = None
    bitrate: int | None = None
    progress: int = 0
    attempts: int = 0
    started_at: datetime.datetime | None = None
    completed_at: datetime.datetime | None = None
    reason: str | None = None
    message: str | None = None
    result_size: int | None = None
    pid: int | None = None


def new_row(job: NewJob, default_model: str, now: datetime.datetime) -> JobRow:
    request = job.request
    fmt = request.format or DEFAULT_FORMAT
    return JobRow(
        job_id=job.job_id,
        created_at=now,
        filename=job.filename,
        model=request.model or default_model,
        format=fmt,
        bitrate=(request.bitrate or DEFAULT_BITRATE) if fmt == "mp3" else None,
        stems=tuple(request.stems) if request.stems else None,
        two_stems=request.two_stems,
        input_key=job.input_key,
        result_key=result_key(job.job_id),
        reason="Queued",
        message="waiting for a free worker",
    )


def human_duration(seconds: float) -> str:
    """Like kubectl's (and the operator's status.duration): 45s, 3m12s, 2h5m."""
    total = max(0, int(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def record_of(row: JobRow) -> JobRecord:
    duration = None
    if row.started_at and row.completed_at:
        duration = human_duration((row.completed_at - row.started_at).total_seconds())
    return JobRecord(
        job_id=row.job_id,
        status=row.status,
        filename=row.filename,
        created_at=row.created_at,
        progress=100 if row.status == COMPLETED else row.progress,
        model=row.model,
        format=row.format,
        stems=output_stems(row.model, row.stems, row.two_stems),
        input_key=row.input_key,
        result_key=row.result_key,
        bitrate=row.bitrate,
        two_stems=row.two_stems,
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
    input_path: Path,
    output_path: Path,
    progress_file: Path,
    termination_log: Path,
    model_repo: Path | None,
) -> list[str]:
    """``stemkube-separate`` for a job: the same options the operator gives a Job's pod."""
    command = [
        *program,
        str(input_path),
        str(output_path),
        f"--model={row.model}",
        f"--format={row.format}",
        f"--progress-file={progress_file}",
        f"--termination-log={termination_log}",
        f"--job-id={row.job_id}",
    ]
    if model_repo is not None:
        command.append(f"--model-repo={model_repo}")
    if row.two_stems:
        command.append(f"--two-stems={row.two_stems}")
    elif row.stems:
        command.append(f"--stems={','.join(row.stems)}")
    if row.format == "mp3" and row.bitrate:
        command.append(f"--bitrate={row.bitrate}")
    return command


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
    leaving ``said`` in its termination log. Bad input and bad arguments are final at once;
    anything else is tried up to ``max_attempts`` times, as the operator's Job backoff does."""
    said = " ".join(said.split())
    if code == EXIT_OK:
        return Outcome(COMPLETED, "Completed", "the stems are ready")
    if code == EXIT_INVALID_INPUT:
        return Outcome(FAILED, "InvalidInput", said or "the input file could not be read as audio")
    if code == EXIT_USAGE:
        return Outcome(FAILED, "InvalidArguments", said or "the separator refused its arguments")
    detail = said or _exit_words(code)
    if attempts < max_attempts:
        return Outcome(
            PENDING, "Retrying", f"attempt {attempts} of {max_attempts} failed: {detail}"
        )
    reason = "TransientError" if code == EXIT_TRANSIENT else "SeparatorError"
    return Outcome(FAILED, reason, f"failed {attempts} time(s); last error: {detail}")


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
