"""The separator's batch mode, its pure parts: the ``--item`` command line and its refusals,
which members are skipped, which endings get an outcome, the process's exit code, and the
small pieces around them (the SeparationJob reads and writes, progress that notices a deleted
member, per-thread job names in the logs, stage timings of overlapping work)."""

import io
import json
import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from stemkube_contract.batch import MAX_OUTCOME_MESSAGE, item_args, skip_reason
from stemkube_contract.exitcodes import CRASH, INVALID_INPUT, MODEL_NOT_FOUND, OK, TRANSIENT, USAGE
from stemkube_separator import batch, exitcodes, logs, options, progress, stages
from stemkube_separator.batch import Fate, MemberEnd
from stemkube_separator.errors import TransientError, UsageError
from stemkube_separator.options import Item

# --- the command line ------------------------------------------------------------------------


def batch_argv(*extra: str) -> list[str]:
    return [
        *item_args("s3://b/in/1.mp3", "s3://b/out/1.zip", "ns", "job-1"),
        "--model", "htdemucs_6s", "--format", "flac",
        *item_args("in2.wav", "out2.zip", "other-ns", "job-2"),
        *extra,
    ]  # fmt: skip


def test_items_in_order_with_the_shared_options() -> None:
    opts = options.parse(batch_argv("--precision", "fp32"), {})
    assert opts.items == (
        Item("s3://b/in/1.mp3", "s3://b/out/1.zip", "ns", "job-1"),
        Item("in2.wav", "out2.zip", "other-ns", "job-2"),
    )
    assert (opts.model, opts.format, opts.precision) == ("htdemucs_6s", "flac", "fp32")
    assert (opts.input, opts.output, opts.progress_cr, opts.job_id) == ("", "", None, None)
    assert opts.items[1].member == "other-ns/job-2"


def test_a_single_run_has_no_items_and_parses_as_before() -> None:
    opts = options.parse(["in.mp3", "out.zip", "--progress-cr", "ns/job"], {})
    assert opts.items == ()
    assert (opts.input, opts.output, opts.job_id) == ("in.mp3", "out.zip", "job")
    assert not options.wants_items(["in.mp3", "out.zip"])
    assert options.wants_items(["--item", "a", "b", "ns/n"])


def test_a_member_runs_as_its_single_run_would() -> None:
    opts = options.parse(batch_argv(), {})
    member = options.member_options(opts, opts.items[1])
    assert (member.input, member.output) == ("in2.wav", "out2.zip")
    assert (member.progress_cr, member.job_id, member.items) == (("other-ns", "job-2"), "job-2", ())
    assert (member.model, member.format) == (opts.model, opts.format)


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (batch_argv("--progress-cr", "ns/x"), "--progress-cr is not allowed with --item"),
        (batch_argv("--progress-file", "/tmp/p"), "--progress-file is not allowed with --item"),
        (batch_argv("--job-id", "x"), "--job-id is not allowed with --item"),
        (["in.mp3", "out.zip", *batch_argv()], "INPUT OUTPUT are not given with --item"),
        (batch_argv("stray.mp3"), "INPUT OUTPUT are not given with --item"),
        (batch_argv("--bogus"), "unrecognized arguments: --bogus"),
        (["--item", "a", "b", "just-a-name"], "expected NAMESPACE/NAME"),
        (["--item", "a", "b", "ns/n/x"], "expected NAMESPACE/NAME"),
        (["--item", "a", "b"], "expected 3 arguments"),
        ([*item_args("a", "b", "ns", "n"), *item_args("c", "d", "ns", "n")], "more than once"),
        (batch_argv("--wav-depth", "32f"), "FLAC stores integers"),
    ],
)
def test_batch_usage_errors_exit_2_and_are_reported(
    argv: list[str], said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    reported: list[str] = []
    parser = options.build_parser({})  # the single run's, as cli.main builds it
    parser.report = reported.append
    with pytest.raises(SystemExit) as exc:
        options.parse(argv, {}, parser)
    assert exc.value.code == exitcodes.USAGE
    assert len(reported) == 1
    assert reported[0].startswith("usage error: ")
    assert said in reported[0]
    assert "usage:" in capsys.readouterr().err


def test_the_batch_parser_documents_item_and_hides_the_single_run_flags() -> None:
    text = options.build_parser({}, batch=True).format_help()
    assert "--item INPUT OUTPUT NAMESPACE/NAME" in text
    assert "--progress-cr" not in text
    assert "--job-id" not in text


# --- skipping, outcomes, the exit code --------------------------------------------------------


@pytest.mark.parametrize(
    ("cr", "reason"),
    [
        (None, "its SeparationJob is gone"),
        ({"metadata": {"deletionTimestamp": "2026-11-28T12:00:00Z"}}, "being deleted"),
        ({"status": {"outcome": {"exitCode": 3, "message": "not audio"}}}, "exit code 3"),
        ({"status": {"outcome": {"exitCode": 0, "message": ""}, "phase": "Running"}}, "code 0"),
        ({"status": {"phase": "Completed"}}, "phase Completed"),
        ({"status": {"phase": "Failed"}}, "phase Failed"),
    ],
)
def test_members_skipped(cr: dict[str, Any] | None, reason: str) -> None:
    said = skip_reason(cr)
    assert said is not None
    assert reason in said


@pytest.mark.parametrize(
    "cr",
    [
        {},
        {"metadata": {"name": "x"}},
        {"status": {"phase": "Running", "progress": 40}},
        {"status": {"phase": "Pending"}},
        {"status": {"outcome": {"message": "no code"}}},  # not an outcome
    ],
)
def test_members_that_run(cr: dict[str, Any]) -> None:
    assert skip_reason(cr) is None


def test_which_endings_get_an_outcome() -> None:
    assert [batch.has_outcome(c) for c in (OK, USAGE, INVALID_INPUT, MODEL_NOT_FOUND)] == [True] * 4
    assert not any(batch.has_outcome(c) for c in (CRASH, TRANSIENT, 143))


def test_exit_0_when_every_member_ended_was_gone_or_skipped() -> None:
    ends = [
        MemberEnd("ns/a", Fate.ENDED),
        MemberEnd("ns/b", Fate.ENDED, INVALID_INPUT, "not audio"),
        MemberEnd("ns/c", Fate.SKIPPED, message="its SeparationJob is gone"),
        MemberEnd("ns/d", Fate.GONE),
    ]
    assert batch.batch_exit(ends) == (OK, "")
    assert batch.batch_exit([]) == (OK, "")


def test_exit_transient_naming_the_members_to_retry() -> None:
    ends = [
        MemberEnd("ns/a", Fate.ENDED),
        MemberEnd("ns/b", Fate.RETRY, TRANSIENT, "downloading s3://x/y: storage\nunreachable"),
        MemberEnd("ns/c", Fate.RETRY, CRASH, "unexpected error: RuntimeError: boom"),
    ]
    code, message = batch.batch_exit(ends)
    assert code == TRANSIENT
    assert message == (
        "2 member(s) failed and will be retried: ns/b: downloading s3://x/y: storage "
        "unreachable; ns/c: unexpected error: RuntimeError: boom"
    )


def test_the_retry_message_names_every_member_within_its_limit() -> None:
    ends = [MemberEnd(f"ns/member-{i}", Fate.RETRY, TRANSIENT, "x" * 2000) for i in range(32)]
    message = batch.retry_message(ends)
    assert len(message) <= MAX_OUTCOME_MESSAGE
    assert all(f"ns/member-{i}:" in message for i in range(32))
    assert "\n" not in message


def test_overlap_of_a_members_tail() -> None:
    assert batch.overlap_tail({}, "cpu") is False
    assert batch.overlap_tail({}, "cuda") is True
    assert batch.overlap_tail({batch.OVERLAP_ENV: "1"}, "cpu") is True
    assert batch.overlap_tail({batch.OVERLAP_ENV: "0"}, "cuda") is False
    with pytest.raises(UsageError, match="STEMKUBE_BATCH_OVERLAP"):
        batch.overlap_tail({batch.OVERLAP_ENV: "yes"}, "cpu")


# --- the SeparationJobs -----------------------------------------------------------------------


class ApiError(Exception):
    """Like kubernetes' ApiException: a ``status`` and a ``reason``."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"({status})\nReason: {reason}\nHTTP response headers: ...")
        self.status, self.reason = status, reason


class FakeCustomObjects:
    """The two CustomObjectsApi methods a batch uses; ``failures`` raised first, in order."""

    def __init__(self, answer: Any = None, failures: list[Exception] | None = None) -> None:
        self.answer = answer
        self.failures = list(failures or [])
        self.calls: list[tuple[Any, ...]] = []
        self.lock = threading.Lock()

    def _call(self, *args: Any) -> Any:
        with self.lock:
            self.calls.append(args)
            if self.failures:
                raise self.failures.pop(0)
        return self.answer

    def get_namespaced_custom_object_status(self, *args: Any, **kwargs: Any) -> Any:
        return self._call(*args)

    def patch_namespaced_custom_object_status(self, *args: Any, **kwargs: Any) -> Any:
        return self._call(*args)


ITEM = Item("in.mp3", "out.zip", "ns", "job-1")


def test_outcome_written_as_the_contracts_merge_patch() -> None:
    api = FakeCustomObjects(answer={"metadata": {"uid": "u"}})
    assert batch.Jobs(api).write_outcome(ITEM, INVALID_INPUT, "the input\nis empty") == {
        "metadata": {"uid": "u"}
    }
    [call] = api.calls
    assert call[:5] == ("stemkube.io", "v1alpha1", "ns", "separationjobs", "job-1")
    assert call[5] == {"status": {"outcome": {"exitCode": 3, "message": "the input is empty"}}}


def test_api_errors_are_retried_with_backoff_and_404_means_gone() -> None:
    slept: list[float] = []
    api = FakeCustomObjects({"spec": {}}, [ApiError(500, "Internal"), OSError("reset")])
    assert batch.Jobs(api, sleep=slept.append).read(ITEM) == {"spec": {}}
    assert slept == [batch.BACKOFF, 2 * batch.BACKOFF]

    gone = FakeCustomObjects(failures=[ApiError(404, "Not Found")])
    assert batch.Jobs(gone, sleep=slept.append).write_outcome(ITEM, OK, "") is None
    assert len(gone.calls) == 1


def test_api_errors_that_last_are_transient() -> None:
    api = FakeCustomObjects(failures=[ApiError(503, "Service Unavailable")] * batch.API_ATTEMPTS)
    with pytest.raises(TransientError) as exc:
        batch.Jobs(api, sleep=lambda _: None).read(ITEM)
    assert str(exc.value) == "reading SeparationJob ns/job-1: HTTP 503 Service Unavailable"
    assert len(api.calls) == batch.API_ATTEMPTS


def test_deleted_or_replaced() -> None:
    assert progress.deleted({"metadata": {"deletionTimestamp": "t", "uid": "u"}}, "u")
    assert progress.deleted({"metadata": {"uid": "other"}}, "u")
    assert not progress.deleted({"metadata": {"uid": "u"}}, "u")
    assert not progress.deleted({"metadata": {"uid": "u"}}, None)
    assert not progress.deleted(None, "u")


@pytest.mark.parametrize(
    ("answer", "failure", "gone"),
    [
        ({"metadata": {"uid": "u"}}, None, False),
        ({"metadata": {"uid": "u", "deletionTimestamp": "t"}}, None, True),
        ({"metadata": {"uid": "a-new-one"}}, None, True),
        (None, ApiError(404, "Not Found"), True),
        (None, ApiError(500, "Internal"), False),
    ],
)
def test_progress_writes_notice_a_deleted_member(
    answer: Any, failure: Exception | None, gone: bool
) -> None:
    api = FakeCustomObjects(answer, [failure] if failure else [])
    inner = progress.CrReporter("ns", "job-1", api, interval=0.0, uid="u")
    reporter = batch.MemberReporter(inner, ITEM, threading.Event())
    reporter.update(10)
    inner.close()
    assert reporter.gone is gone
    if gone:
        with pytest.raises(batch.MemberGoneError, match="ns/job-1 was deleted"):
            reporter.update(20)
    else:
        reporter.update(20)  # goes on


def test_a_stopping_batch_stops_its_members() -> None:
    stopping = threading.Event()
    inner = progress.CrReporter("ns", "job-1", FakeCustomObjects(), interval=0.0)
    reporter = batch.MemberReporter(inner, ITEM, stopping)
    reporter.check()
    stopping.set()
    with pytest.raises(batch.StoppingError):
        reporter.check()
    reporter.close()


# --- logs and timings of overlapping work ------------------------------------------------------


def test_each_threads_lines_name_its_member() -> None:
    stream = io.StringIO()
    logs.setup(None, stream=stream)
    logger = logging.getLogger("stemkube_separator.test")
    try:
        logger.info("the batch's own")
        with logs.job("job-1"):
            logger.info("the first member's")

            def other() -> None:
                with logs.job("job-2"):
                    logger.info("the next member's, meanwhile")

            thread = threading.Thread(target=other)
            thread.start()
            thread.join()
            carried = threading.Thread(target=logs.carrying_job(lambda: logger.info("carried")))
            carried.start()
            carried.join()
            with ThreadPoolExecutor(1, initializer=logs.inheriting_job()) as pool:
                pool.submit(logger.info, "an encoder's").result()
        logger.info("the batch's again")
    finally:
        logging.getLogger().handlers.clear()
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(line["msg"], line.get("job")) for line in lines] == [
        ("the batch's own", None),
        ("the first member's", "job-1"),
        ("the next member's, meanwhile", "job-2"),
        ("carried", "job-1"),
        ("an encoder's", "job-1"),
        ("the batch's again", None),
    ]


def test_a_single_runs_threads_keep_the_process_job() -> None:
    assert logs.inheriting_job() is None  # no thread job: pools use the process's
    target = lambda: None  # noqa: E731
    assert logs.carrying_job(target) is target


def test_member_and_process_timings() -> None:
    process = stages.Stages(origin=100.0)
    process.clock = 100.0
    member = stages.Stages(origin=process.clock)
    both = stages.Both(process, member)
    both.lap(stages.SETUP)
    both.wait(stages.FETCH)  # the process waited for the input thread: not the member's time
    both.lap(stages.SEPARATE)
    assert set(process.seconds) == {stages.SETUP, stages.FETCH, stages.SEPARATE}
    assert set(member.seconds) == {stages.SETUP, stages.SEPARATE}
    assert sum(process.seconds.values()) == pytest.approx(process.wall())
    assert member.seconds[stages.SEPARATE] == process.seconds[stages.SEPARATE]

    fetched = stages.Stages()
    fetched.seconds = {stages.FETCH: 0.25, stages.DECODE: 0.5}
    member.seconds = {stages.SETUP: 0.001, stages.SEPARATE: 2.0, stages.FINISH: 0.1}
    assert list(stages.merged(member, fetched).items()) == [
        (stages.SETUP, 0.001),
        (stages.FETCH, 0.25),
        (stages.DECODE, 0.5),
        (stages.SEPARATE, 2.0),
        (stages.FINISH, 0.1),
    ]


def test_milestones_are_lapped_as_they_pass() -> None:
    milestones = batch.Milestones((stages.FETCH, stages.DECODE))
    lapped: list[tuple[str, float]] = []
    future: Future[str] = Future()

    def work() -> None:
        time.sleep(0.05)
        milestones.passed(stages.FETCH)
        time.sleep(0.05)
        future.set_result("song")
        milestones.all_passed()

    started = time.monotonic()
    threading.Thread(target=work).start()
    got = milestones.wait(lambda name: lapped.append((name, time.monotonic() - started)), future)
    assert got == "song"
    assert [name for name, _ in lapped] == [stages.FETCH, stages.DECODE]
    assert 0.04 <= lapped[0][1] < lapped[1][1]


def test_a_dropped_prefetch_leaves_no_folder(tmp_path: Path) -> None:
    folder = tmp_path / "song"
    folder.mkdir()
    release = threading.Event()

    def load(prefetch: batch.Prefetch) -> batch.Song:
        release.wait(5)
        return batch.Song(folder, None, 1.0)

    with ThreadPoolExecutor(1) as pool:
        prefetch = batch.Prefetch(pool, ITEM, load)
        prefetch.drop()  # while it runs: the folder goes when it ends
        release.set()
    assert not folder.exists()
