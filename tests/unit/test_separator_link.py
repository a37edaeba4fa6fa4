"""The separator's side of the job link (``link``, ``linkstorage``, ``progress.LinkReporter``,
``batch.LinkMembers``), against a real HTTP server in a thread that fakes both the operator's
link server and the store behind its presigned URLs. The integration tier runs the real
operator and MinIO instead.
"""

import http.server
import json
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from stemkube_contract import joblink
from stemkube_contract.joblink import ProgressReport
from stemkube_separator import batch, inputs, link, linkstorage, options, progress, storage
from stemkube_separator.errors import InvalidInputError, TransientError, UsageError
from stemkube_separator.link import Link, MemberGoneError
from stemkube_separator.locations import S3Object
from stemkube_separator.options import Item
from tests.harness.loopback import http_server

OBJECT = S3Object("songs", "in/song.mp3")
TARGET = S3Object("results", "out/job-1.zip")
NO_SUCH_KEY = (
    b"<?xml version='1.0'?><Error><Code>NoSuchKey</Code>"
    b"<Message>The specified key does not exist.</Message></Error>"
)


@dataclass
class Fake:
    """What the server answers and what it was asked. ``answers``: per link path, answers
    (status, body) given once each, in order, before the path's usual answer."""

    answers: dict[str, list[tuple[int, dict[str, Any]]]] = field(default_factory=dict)
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)
    member: dict[str, Any] = field(default_factory=dict)
    complete_gone: bool = False
    input_status: int = 200
    input_body: bytes = b"an mp3"
    input_length: bool = True  # whether the GET's answer states its Content-Length
    put_status: int = 200
    parts: dict[int, bytes] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    base: str = ""

    def paths(self) -> list[str]:
        return [path for path, _ in self.calls]

    def bodies(self, path: str) -> list[dict[str, Any]]:
        return [body for p, body in self.calls if p == path]

    def usual(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        if path == joblink.MEMBER:
            answer = {"name": body["name"], "uid": "u-1", "run": True, "why": ""}
            answer["inputUrl"] = f"{self.base}/store/get"
            return {**answer, **self.member}
        if path == joblink.UPLOAD_BEGIN:
            return {"uploadId": "up-1"}
        if path == joblink.UPLOAD_PART:
            return {"url": f"{self.base}/store/put/{body['part']}"}
        if path == joblink.UPLOAD_COMPLETE:
            return joblink.gone_answer(self.complete_gone)
        if path == joblink.PROGRESS:
            return joblink.gone_answer(False)
        return {}


def handler(current: list[Fake]) -> type[http.server.BaseHTTPRequestHandler]:
    """Answers as the test's ``Fake`` (``current[0]``) says."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            fake = current[0]
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with fake.lock:
                fake.calls.append((self.path, body))
                fake.tokens.append(self.headers.get("Authorization", ""))
                queued = fake.answers.get(self.path)
                status, answer = queued.pop(0) if queued else (200, fake.usual(self.path, body))
            data = json.dumps(answer).encode()
            self._send(status, data, {"Content-Length": str(len(data))})

        def do_GET(self) -> None:
            fake = current[0]
            body = fake.input_body if fake.input_status == 200 else NO_SUCH_KEY
            length = {"Content-Length": str(len(body))} if fake.input_length else {}
            self._send(fake.input_status, body, length)  # HTTP/1.0: the body ends at close

        def do_PUT(self) -> None:
            fake = current[0]
            data = self.rfile.read(int(self.headers["Content-Length"]))
            number = int(self.path.rsplit("/", 1)[1])
            if fake.put_status != 200:
                message = b"<Error><Code>AccessDenied</Code><Message>Request has expired"
                self._send(fake.put_status, message + b"</Message></Error>")
                return
            with fake.lock:
                fake.parts[number] = data
            self._send(200, b"", {"ETag": f'"etag-{number}"', "Content-Length": "0"})

    return Handler


@dataclass
class Served:
    fake: Fake
    link: Link
    store: linkstorage.LinkStore
    token: Path


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, list[Fake]]]:
    current = [Fake()]
    with http_server(handler(current), "fake-link") as base:
        yield base, current


@pytest.fixture
def served(server: tuple[str, list[Fake]], tmp_path: Path) -> Served:
    base, current = server
    current[0] = fake = Fake(base=base)
    token = tmp_path / "token"
    token.write_text("token-1\n")
    linked = Link(base, str(token), sleep=lambda _: None)
    return Served(fake, linked, linkstorage.link_store(linked, "ns", "job-1"), token)


# --- the client --------------------------------------------------------------------------------


def test_the_token_is_read_at_every_request_and_sent_as_bearer(served: Served) -> None:
    assert served.link.member("job-1").input_url == f"{served.fake.base}/store/get"
    served.token.write_text("token-2")  # the kubelet renewed it
    assert served.link.progress(ProgressReport("job-1", progress=5)) is False
    assert served.fake.tokens == ["Bearer token-1", "Bearer token-2"]
    assert served.fake.bodies(joblink.PROGRESS) == [{"name": "job-1", "progress": 5}]


def test_a_forbidden_name_is_final_with_the_servers_words(served: Served) -> None:
    error = joblink.error_answer("not a SeparationJob of this pod's Job")
    served.fake.answers[joblink.MEMBER] = [(403, error)]
    with pytest.raises(UsageError, match="HTTP 403: not a SeparationJob of this pod's Job"):
        served.link.member("someone-else")
    assert len(served.fake.calls) == 1  # not retried
    served.fake.answers[joblink.MEMBER] = [(400, joblink.error_answer("'name' must be..."))]
    with pytest.raises(UsageError, match="HTTP 400"):
        served.link.member("x")


def test_503_is_retried_and_401_is_transient(served: Served) -> None:
    busy = (503, joblink.error_answer("the API server cannot be reached"))
    served.fake.answers[joblink.UPLOAD_BEGIN] = [busy, busy]
    assert served.link.upload_begin("job-1") == "up-1"
    assert served.fake.paths() == [joblink.UPLOAD_BEGIN] * 3

    served.fake.answers[joblink.MEMBER] = [busy] * link.ATTEMPTS
    with pytest.raises(TransientError, match="HTTP 503: the API server cannot be reached"):
        served.link.member("job-1")

    served.fake.answers[joblink.MEMBER] = [(401, joblink.error_answer("no valid token"))]
    with pytest.raises(TransientError, match="HTTP 401: no valid token"):
        served.link.member("job-1")


def test_an_unreachable_link_is_transient(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    token = tmp_path / "token"
    token.write_text("secret-token")
    slept: list[float] = []
    linked = Link(f"http://127.0.0.1:{port}", str(token), sleep=slept.append)
    with pytest.raises(TransientError, match="is unreachable") as exc:
        linked.member("job-1")
    assert "secret-token" not in str(exc.value)
    expected, delay = [], link.BACKOFF
    for _ in range(link.ATTEMPTS - 1):
        expected.append(delay)
        delay = min(delay * 2, link.MAX_BACKOFF)
    assert slept == expected
    assert 20 < sum(slept) < 40  # an operator's rollout is ridden out, not a dead one


def test_a_gone_member_on_begin_or_part_stops_that_member(served: Served) -> None:
    gone = (joblink.GONE_STATUS, joblink.error_answer("the SeparationJob ns/job-1 is gone"))
    served.fake.answers[joblink.UPLOAD_BEGIN] = [gone]
    with pytest.raises(link.MemberGoneError, match="is gone"):
        served.link.upload_begin("job-1")
    assert len(served.fake.calls) == 1  # not retried


def test_link_mode_is_on_with_its_url_and_needs_the_token_path(tmp_path: Path) -> None:
    assert link.from_env({}) is None
    with pytest.raises(UsageError, match=joblink.TOKEN_ENV):
        link.from_env({joblink.URL_ENV: "http://10.0.0.1:8082"})
    linked = link.from_env({joblink.URL_ENV: "http://l:1/", joblink.TOKEN_ENV: "/t"})
    assert linked is not None
    assert linked.base_url == "http://l:1"
    env = {joblink.URL_ENV: "http://l:1", joblink.TOKEN_ENV: "/t"}
    single = options.parse(["s3://songs/in.mp3", "s3://results/out.zip"], env)
    with pytest.raises(UsageError, match="--progress-cr"):
        inputs.single_store(single, env)
    named = options.parse(["s3://b/i", "s3://b/o", "--progress-cr", "ns/job-1"], env)
    store = inputs.single_store(named, env)
    assert isinstance(store, linkstorage.LinkStore)
    assert store.member == "ns/job-1"


# --- the input ---------------------------------------------------------------------------------


def test_the_input_comes_from_the_presigned_url(served: Served, tmp_path: Path) -> None:
    path = inputs.fetch_input(OBJECT, tmp_path, served.store, max_size=100)
    assert path.read_bytes() == b"an mp3"
    assert served.fake.bodies(joblink.MEMBER) == [{"name": "job-1"}]


def test_an_input_that_is_not_there_is_invalid(served: Served, tmp_path: Path) -> None:
    served.fake.input_status = 404
    with pytest.raises(InvalidInputError, match=r"the input s3://songs/in/song.mp3 does not ex"):
        linkstorage.fetch_input(OBJECT, tmp_path, served.store, max_size=100)


def test_other_store_errors_are_transient(served: Served, tmp_path: Path) -> None:
    served.fake.input_status = 403
    with pytest.raises(TransientError, match=r"^downloading s3://songs/in/song.mp3: S3 error"):
        linkstorage.fetch_input(OBJECT, tmp_path, served.store, max_size=100)


def test_an_input_too_large_by_its_stated_size(served: Served, tmp_path: Path) -> None:
    served.fake.input_body = b"x" * 11
    with pytest.raises(InvalidInputError, match=r"is 11B \(11 bytes\); the limit is 10B"):
        linkstorage.fetch_input(OBJECT, tmp_path, served.store, max_size=10)
    assert not (tmp_path / "input").exists()


def test_an_input_too_large_as_it_streams(served: Served, tmp_path: Path) -> None:
    served.fake.input_body, served.fake.input_length = b"x" * 11, False
    with pytest.raises(InvalidInputError, match="more arrived than its stated size"):
        linkstorage.fetch_input(OBJECT, tmp_path, served.store, max_size=10)
    assert not (tmp_path / "input").exists()


def test_a_member_not_to_run_any_more_is_gone(served: Served, tmp_path: Path) -> None:
    served.fake.member = {"run": False, "why": "being deleted", "inputUrl": None}
    with pytest.raises(MemberGoneError, match="ns/job-1 is not to run: being deleted"):
        linkstorage.fetch_input(OBJECT, tmp_path, served.store, max_size=10)


# --- the output --------------------------------------------------------------------------------


@pytest.fixture
def small_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(storage, "PART_SIZE", 8)
    monkeypatch.setattr(storage, "PIPE_LIMIT", 16)


@pytest.mark.parametrize(("size", "parts"), [(20, 3), (16, 2), (0, 1)])
@pytest.mark.usefixtures("small_parts")
def test_the_output_goes_up_in_parts_completed_once(served: Served, size: int, parts: int) -> None:
    data = bytes(range(size))
    with linkstorage.open_output(TARGET, served.store) as out:
        for start in range(0, size, 3):
            out.write(data[start : start + 3])
    fake = served.fake
    assert b"".join(fake.parts[n] for n in sorted(fake.parts)) == data
    numbered = [(body["part"], body["uploadId"]) for body in fake.bodies(joblink.UPLOAD_PART)]
    assert numbered == [(n, "up-1") for n in range(1, parts + 1)]
    [complete] = fake.bodies(joblink.UPLOAD_COMPLETE)
    assert complete == {
        "name": "job-1",
        "uploadId": "up-1",
        "parts": [{"part": n, "etag": f'"etag-{n}"'} for n in range(1, parts + 1)],
    }
    assert joblink.UPLOAD_ABORT not in fake.paths()


def write_output(
    store: linkstorage.LinkStore,
    chunks: list[bytes],
    check: Callable[[], None] = lambda: None,
    error: Exception | None = None,
) -> None:
    """``chunks`` written to TARGET as the ZIP writer would, then ``error`` raised."""
    with linkstorage.open_output(TARGET, store) as out:
        checked = storage.Checked(out, check)
        for chunk in chunks:
            checked.write(chunk)
        if error is not None:
            raise error


@pytest.mark.usefixtures("small_parts")
def test_a_writers_failure_aborts_and_never_completes(served: Served) -> None:
    with pytest.raises(RuntimeError, match="the ZIP failed"):
        write_output(served.store, [b"x" * 20], error=RuntimeError("the ZIP failed"))
    paths = served.fake.paths()
    assert paths.count(joblink.UPLOAD_ABORT) == 1
    assert served.fake.bodies(joblink.UPLOAD_ABORT) == [{"name": "job-1", "uploadId": "up-1"}]
    assert joblink.UPLOAD_COMPLETE not in paths


@pytest.mark.usefixtures("small_parts")
def test_a_refused_part_aborts_as_a_storage_error(served: Served) -> None:
    served.fake.put_status = 403
    with pytest.raises(TransientError, match=r"^uploading s3://results/out/job-1.zip: S3 error Ac"):
        write_output(served.store, [b"x" * 8] * 10)
    assert joblink.UPLOAD_ABORT in served.fake.paths()
    assert joblink.UPLOAD_COMPLETE not in served.fake.paths()


@pytest.mark.usefixtures("small_parts")
def test_a_member_deleted_before_the_complete_is_gone(served: Served) -> None:
    served.fake.complete_gone = True
    with pytest.raises(batch.MemberGoneError, match="ns/job-1 was deleted"):
        write_output(served.store, [b"x" * 10])
    assert joblink.UPLOAD_ABORT not in served.fake.paths()  # the link aborted it itself


@pytest.mark.usefixtures("small_parts")
def test_a_member_deleted_while_it_uploads_stops_the_upload(served: Served) -> None:
    checks: list[None] = []

    def check() -> None:  # the batch's: the member is found deleted at the second write
        checks.append(None)
        if len(checks) > 1:
            raise batch.MemberGoneError("SeparationJob ns/job-1 was deleted")

    with pytest.raises(batch.MemberGoneError):
        write_output(served.store, [b"x" * 10, b"x"], check)
    assert joblink.UPLOAD_ABORT in served.fake.paths()
    assert joblink.UPLOAD_COMPLETE not in served.fake.paths()


def test_a_local_output_needs_no_link(served: Served, tmp_path: Path) -> None:
    with linkstorage.open_output(tmp_path / "out.zip", served.store) as out:
        out.write(b"zip")
    assert (tmp_path / "out.zip").read_bytes() == b"zip"
    assert served.fake.calls == []


# --- progress and a batch's members ------------------------------------------------------------


def test_the_link_reporter_sends_progress_and_the_songs_length(served: Served) -> None:
    reporter = progress.LinkReporter(served.link, "ns", "job-1", interval=3600)
    reporter.update(0)
    reporter.audio(7.5)
    reporter.update(50)
    reporter.update(100)
    reporter.close()
    bodies = served.fake.bodies(joblink.PROGRESS)
    assert {"name": "job-1", "audioSeconds": 7.5} in bodies
    assert bodies[-1] == {"name": "job-1", "progress": 100}  # the last value is never dropped
    assert len(bodies) <= 4
    assert not reporter.gone.is_set()


def test_the_link_reporter_notices_a_member_gone_and_never_raises(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    served.fake.answers[joblink.PROGRESS] = [(403, joblink.error_answer("not yours"))]
    reporter = progress.LinkReporter(served.link, "ns", "job-1", interval=0.0)
    reporter.update(10)
    reporter.close()
    assert "could not write progress to ns/job-1" in caplog.text
    assert not reporter.gone.is_set()

    served.fake.answers[joblink.PROGRESS] = [(200, joblink.gone_answer(True))]
    reporter = progress.LinkReporter(served.link, "ns", "job-1", interval=0.0)
    member = batch.MemberReporter(reporter, Item("i", "o", "ns", "job-1"), threading.Event())
    member.update(20)
    reporter.close()
    assert member.gone
    with pytest.raises(batch.MemberGoneError):
        member.update(30)


def test_link_mode_is_chosen_for_progress(served: Served) -> None:
    env = {joblink.URL_ENV: served.fake.base, joblink.TOKEN_ENV: str(served.token)}
    reporter = progress.cr_reporter("ns", "job-1", env)
    assert isinstance(reporter, progress.LinkReporter)
    reporter.close()


def test_a_batch_asks_the_link_whether_to_run_and_writes_outcomes(served: Served) -> None:
    members = batch.LinkMembers(served.link, sleep=lambda _: None)
    item = Item("s3://songs/in.mp3", "s3://results/out.zip", "ns", "job-1")
    assert members.look(item) == batch.Turn(None, "u-1")
    served.fake.member = {"run": False, "why": "finished (Completed)"}
    assert members.look(item).skip == "finished (Completed)"

    busy = (503, joblink.error_answer("busy"))
    served.fake.answers[joblink.PROGRESS] = [busy] * link.ATTEMPTS + [(200, {"gone": False})]
    assert members.write_outcome(item, 3, "the input is empty", None) is True
    outcome = {"name": "job-1", "outcome": {"exitCode": 3, "message": "the input is empty"}}
    assert served.fake.bodies(joblink.PROGRESS)[-1] == outcome

    served.fake.answers[joblink.PROGRESS] = [(200, {"gone": True})]
    assert members.write_outcome(item, 0, "", None) is False

    served.fake.answers[joblink.PROGRESS] = [busy] * (link.ATTEMPTS * batch.API_ATTEMPTS)
    with pytest.raises(TransientError, match="writing the outcome of SeparationJob ns/job-1"):
        members.write_outcome(item, 0, "", None)


def test_a_batch_in_link_mode_needs_no_kubernetes_api(served: Served) -> None:
    env = {joblink.URL_ENV: served.fake.base, joblink.TOKEN_ENV: str(served.token)}
    opts = options.parse(["--item", "s3://b/i", "s3://b/o", "ns/job-1"], env)
    members = batch.batch_members(env, opts)
    assert isinstance(members, batch.LinkMembers)
    store = members.store(opts.items[0])
    assert isinstance(store, linkstorage.LinkStore)
    assert store.name == "job-1"
