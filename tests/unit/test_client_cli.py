"""The ``stemkube`` client's own logic: argument handling, exit codes, file names, the API key
and the API's refusals."""

import functools
import io
import os
import re
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from rich.console import Console

from stemkube_client import cli
from stemkube_client.progress import Progress
from stemkube_client.table import print_jobs


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ('attachment; filename="song_stems.zip"', "song_stems.zip"),
        ("attachment; filename*=UTF-8''Caf%C3%A9_stems.zip", "Café_stems.zip"),
        ('attachment; filename="../../etc/passwd"', "passwd"),
        ('attachment; filename=".."', None),
        ("attachment", None),
        (None, None),
    ],
)
def test_download_name_from_the_server(header: str | None, name: str | None) -> None:
    headers = {"content-disposition": header} if header else {}
    assert cli._filename_from(httpx.Response(200, headers=headers)) == name


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["separate"],
        ["separate", "a.mp3", "--stems=vocals", "--two-stems=drums"],
        ["separate", "a.mp3", "--format=ogg"],
        ["frobnicate"],
    ],
)
def test_usage_errors_exit_2(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        cli.main(argv)
    assert caught.value.code == cli.EXIT_USAGE


def test_a_missing_song_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["-q", "separate", "/no/such/song.mp3"]) == cli.EXIT_USAGE
    assert capsys.readouterr().err.strip() == "stemkube: no such file: /no/such/song.mp3"


def test_api_url_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STEMKUBE_API_URL", "http://stems.example:9000")
    assert cli._parser().parse_args(["list"]).api_url == "http://stems.example:9000"
    monkeypatch.delenv("STEMKUBE_API_URL")
    assert cli._parser().parse_args(["list"]).api_url == "http://localhost:8000"


# -- API keys and the API's refusals, against a stand-in server (httpx.MockTransport) --------

KEY = "stk_0123456789ab_" + "s" * 43
Handler = Callable[[httpx.Request], httpx.Response]


@pytest.fixture
def serve(monkeypatch: pytest.MonkeyPatch) -> Callable[[Handler], list[httpx.Request]]:
    """Routes the client's requests to ``handler``; returns the requests it got."""
    monkeypatch.delenv(cli.KEY_ENV, raising=False)

    def install(handler: Handler) -> list[httpx.Request]:
        seen: list[httpx.Request] = []

        def record(request: httpx.Request) -> httpx.Response:
            seen.append(request)
            return handler(request)

        transport = httpx.MockTransport(record)
        monkeypatch.setattr(cli, "Api", functools.partial(cli.Api, transport=transport))
        return seen

    return install


def no_jobs(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json={"jobs": [], "next_cursor": None})


def test_the_key_goes_as_a_bearer_token(
    serve: Callable[[Handler], list[httpx.Request]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    seen = serve(no_jobs)
    assert cli.main(["--api-key", KEY, "list"]) == cli.EXIT_OK
    monkeypatch.setenv(cli.KEY_ENV, f"  {KEY}\n")  # as KEY=$(cat file) may leave it
    assert cli.main(["list"]) == cli.EXIT_OK
    assert cli.main(["--api-key", "stk_other", "list"]) == cli.EXIT_OK  # the flag wins
    monkeypatch.setenv(cli.KEY_ENV, "")
    assert cli.main(["list"]) == cli.EXIT_OK
    sent = [r.headers.get("authorization") for r in seen]
    assert sent == [f"Bearer {KEY}", f"Bearer {KEY}", "Bearer stk_other", None]
    assert all("x-api-key" not in r.headers for r in seen)
    assert KEY not in "".join(capsys.readouterr())


def test_the_key_is_not_in_the_help(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(cli.KEY_ENV, KEY)
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    assert "--api-key" in out
    assert "STEMKUBE_API_KEY" in out
    assert KEY not in out


@pytest.mark.parametrize("bad", ["stk_abc def", "stk_é", "stk_\x00x"])
def test_a_key_no_server_could_take_is_a_usage_error_that_does_not_repeat_it(
    serve: Callable[[Handler], list[httpx.Request]],
    capsys: pytest.CaptureFixture[str],
    bad: str,
) -> None:
    seen = serve(no_jobs)
    assert cli.main(["--api-key", bad, "list"]) == cli.EXIT_USAGE
    out, err = capsys.readouterr()
    assert seen == []
    assert err.startswith("stemkube: the API key (--api-key or $STEMKUBE_API_KEY) has ")
    assert bad not in out + err


def refuse(status: int, detail: str, **headers: str) -> Handler:
    return lambda request: httpx.Response(status, json={"detail": detail}, headers=headers)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["list"],
            "stemkube: job list: HTTP 401: an API key is required: send it as 'Authorization: "
            "Bearer <key>' or 'X-API-Key' (give the API key with --api-key or "
            "$STEMKUBE_API_KEY)",
        ),
        (
            ["--api-key", KEY, "list"],
            "stemkube: job list: HTTP 401: an API key is required: send it as 'Authorization: "
            "Bearer <key>' or 'X-API-Key' (the key of --api-key or $STEMKUBE_API_KEY was "
            "refused)",
        ),
    ],
)
def test_a_401_says_the_servers_words_and_what_to_do(
    serve: Callable[[Handler], list[httpx.Request]],
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    message: str,
) -> None:
    detail = "an API key is required: send it as 'Authorization: Bearer <key>' or 'X-API-Key'"
    serve(refuse(401, detail, **{"WWW-Authenticate": 'Bearer realm="stemkube"'}))
    assert cli.main(argv) == cli.EXIT_SERVER
    out, err = capsys.readouterr()
    assert err.strip() == message
    assert KEY not in out + err


def test_a_403_says_the_servers_words(
    serve: Callable[[Handler], list[httpx.Request]], capsys: pytest.CaptureFixture[str]
) -> None:
    seen = serve(refuse(403, "only admin keys may filter by tenant"))
    assert cli.main(["--api-key", KEY, "list", "--tenant", "acme"]) == cli.EXIT_SERVER
    assert seen[0].url.params["tenant"] == "acme"
    err = capsys.readouterr().err.strip()
    assert err == "stemkube: job list: HTTP 403: only admin keys may filter by tenant"


def test_a_429_says_the_servers_words_and_when_to_retry(
    serve: Callable[[Handler], list[httpx.Request]], capsys: pytest.CaptureFixture[str]
) -> None:
    detail = "rate limit of key 'ci': 3 requests per minute; the next minute starts in 17 s"
    serve(refuse(429, detail, **{"Retry-After": "17"}))
    assert cli.main(["--api-key", KEY, "status", "job-1"]) == cli.EXIT_SERVER
    assert capsys.readouterr().err.strip() == f"stemkube: job job-1: HTTP 429: {detail} " + (
        "(retry after 17 s)"
    )
    serve(refuse(429, "slow down"))  # no Retry-After: nothing made up
    assert cli.main(["--api-key", KEY, "status", "job-1"]) == cli.EXIT_SERVER
    assert capsys.readouterr().err.strip() == "stemkube: job job-1: HTTP 429: slow down"


def test_following_a_job_waits_out_the_rate_limit(
    serve: Callable[[Handler], list[httpx.Request]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    answers = iter(
        [
            httpx.Response(200, json={"status": "processing", "progress": 40}),
            httpx.Response(429, json={"detail": "rate limit"}, headers={"Retry-After": "7"}),
            httpx.Response(200, json={"status": "completed", "progress": 100}),
        ]
    )
    serve(lambda request: next(answers))
    slept: list[float] = []
    monkeypatch.setattr("stemkube_client.cli.time.sleep", slept.append)
    api = cli.Api("http://api.test", KEY)
    status = cli.follow(api, "job-1", Progress(quiet=False), interval=0.5)
    assert status["status"] == "completed"
    assert slept == [0.5, 7]
    err = capsys.readouterr().err
    assert "job job-1: HTTP 429: rate limit; polling again in 7 s" in err
    assert KEY not in err


def test_the_key_does_not_follow_a_redirect_to_another_host(
    serve: Callable[[Handler], list[httpx.Request]], tmp_path: Path
) -> None:
    """A presigned download redirects to the object store: it gets no key."""

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "localhost":
            return httpx.Response(307, headers={"Location": "http://s3.test/b/r.zip?sig=1"})
        return httpx.Response(
            200, content=b"PK", headers={"content-disposition": 'attachment; filename="r.zip"'}
        )

    seen = serve(handler)
    assert cli.main(["-q", "--api-key", KEY, "download", "job-1", "-o", str(tmp_path)]) == 0
    assert [(r.url.host, r.headers.get("authorization")) for r in seen] == [
        ("localhost", f"Bearer {KEY}"),
        ("s3.test", None),
    ]
    assert (tmp_path / "r.zip").read_bytes() == b"PK"


def test_an_admins_list_shows_the_tenants(
    serve: Callable[[Handler], list[httpx.Request]], capsys: pytest.CaptureFixture[str]
) -> None:
    job = {
        "job_id": "j1",
        "status": "completed",
        "progress": 100,
        "created_at": "2026-01-01T00:00:00+00:00",
        "filename": "song.mp3",
    }
    serve(lambda r: httpx.Response(200, json={"jobs": [{**job, "tenant": "acme"}]}))
    assert cli.main(["--api-key", KEY, "list"]) == cli.EXIT_OK
    head, row = capsys.readouterr().out.splitlines()
    assert head.split() == ["JOB", "ID", "STATUS", "PROGRESS", "CREATED", "TENANT", "FILENAME"]
    assert row.split()[-2:] == ["acme", "song.mp3"]
    serve(lambda r: httpx.Response(200, json={"jobs": [{**job, "tenant": None}]}))
    assert cli.main(["--api-key", KEY, "list"]) == cli.EXIT_OK
    assert "TENANT" not in capsys.readouterr().out


def test_the_exact_name_wins_over_its_ascii_stand_in() -> None:
    header = "attachment; filename=\"Beyonce_stems.zip\"; filename*=UTF-8''Beyonc%C3%A9_stems.zip"
    assert cli._filename_from(httpx.Response(200, headers={"content-disposition": header})) == (
        "Beyoncé_stems.zip"
    )


# -- Where a download goes ----------------------------------------------------------------------


def zip_server(name: str = "song_stems.zip") -> Handler:
    return lambda request: httpx.Response(
        200, content=b"PK", headers={"content-disposition": f'attachment; filename="{name}"'}
    )


@pytest.mark.parametrize("separator", sorted({"/", os.sep}))
def test_an_output_with_a_trailing_separator_is_a_folder_made_for_it(
    serve: Callable[[Handler], list[httpx.Request]],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    separator: str,
) -> None:
    serve(zip_server())
    output = f"{tmp_path / 'new' / 'dir'}{separator}"
    assert cli.main(["-q", "download", "job-1", "-o", output]) == cli.EXIT_OK
    saved = tmp_path / "new" / "dir" / "song_stems.zip"
    assert saved.read_bytes() == b"PK"
    assert capsys.readouterr().out.strip() == str(saved)
    assert sorted(p.name for p in (tmp_path / "new" / "dir").iterdir()) == ["song_stems.zip"]


def test_an_output_is_a_file_unless_it_is_a_folder(
    serve: Callable[[Handler], list[httpx.Request]], tmp_path: Path
) -> None:
    serve(zip_server())
    assert cli.main(["-q", "download", "job-1", "-o", str(tmp_path)]) == cli.EXIT_OK
    assert (tmp_path / "song_stems.zip").read_bytes() == b"PK"
    assert cli.main(["-q", "download", "job-1", "-o", str(tmp_path / "mine.zip")]) == 0
    assert (tmp_path / "mine.zip").read_bytes() == b"PK"


def test_an_output_in_a_missing_folder_is_a_usage_error(
    serve: Callable[[Handler], list[httpx.Request]],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    serve(zip_server())
    missing = tmp_path / "nowhere" / "x.zip"
    assert cli.main(["-q", "download", "job-1", "-o", str(missing)]) == cli.EXIT_USAGE
    assert capsys.readouterr().err.startswith(f"stemkube: cannot write {missing}.part: ")
    assert not (tmp_path / "nowhere").exists()


# -- The job list ---------------------------------------------------------------------------------

JOBS = [
    {
        "job_id": "0b7c3f52-5f0e-4a8e-9a43-1d6c1e6f3b10",
        "status": "processing",
        "progress": 7,
        "created_at": "2026-11-28T15:31:07.123456+00:00",  # the API's stamps: microseconds
        "filename": "a rather long file name [bold]with markup[/bold].mp3",
        "tenant": "a-tenant-name",
    },
    {
        "job_id": "j2",
        "status": "completed",
        "progress": 100,
        "created_at": "2026-11-28T09:00:00+00:00",
        "filename": "日本の歌.flac",
        "tenant": None,
    },
]


def columns_of(head: str) -> list[int]:
    """Where each header word group starts (columns are 2 blanks apart)."""
    return [match.start() for match in re.finditer(r"(?:^|(?<=  ))\S", head)]


def assert_aligned(lines: list[str], cells: list[list[str]]) -> None:
    """Each row's cells start where their header does (right-aligned PROGRESS ends where
    its header ends) and end before the next column starts."""
    head, rows = lines[0], lines[1:]
    starts = columns_of(head)
    names = [head[a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True)]
    assert names[:5] == ["JOB ID", "STATUS", "PROGRESS", "CREATED", "TENANT"]
    for row, values in zip(rows, cells, strict=True):
        for index, value in enumerate(values):
            if names[index] == "PROGRESS":
                end = starts[index] + len("PROGRESS")
                assert row[end - len(value) : end] == value, (row, value)
            else:
                assert row[starts[index] :].startswith(value), (row, value)
            if index + 1 < len(starts):
                assert row[starts[index + 1] - 2 : starts[index + 1]] == "  ", row


def test_the_list_columns_hold_their_values(
    serve: Callable[[Handler], list[httpx.Request]], capsys: pytest.CaptureFixture[str]
) -> None:
    serve(lambda request: httpx.Response(200, json={"jobs": JOBS, "next_cursor": None}))
    assert cli.main(["list"]) == cli.EXIT_OK
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3  # not a terminal: one line a job, however long
    assert all(line == line.rstrip() for line in lines)
    assert_aligned(
        lines,
        [
            [
                "0b7c3f52-5f0e-4a8e-9a43-1d6c1e6f3b10",
                "processing",
                "7%",
                "2026-11-28 15:31:07Z",
                "a-tenant-name",
                "a rather long file name [bold]with markup[/bold].mp3",
            ],
            ["j2", "completed", "100%", "2026-11-28 09:00:00Z", "-", "日本の歌.flac"],
        ],
    )


@pytest.mark.parametrize("width", [70, 100, 160])
def test_on_a_terminal_the_list_fits_and_never_cuts_an_id(width: int) -> None:
    out = io.StringIO()
    print_jobs(JOBS, Console(file=out, force_terminal=True, color_system=None, width=width))
    lines = out.getvalue().splitlines()
    assert_aligned(
        lines[:2],
        [["0b7c3f52-5f0e-4a8e-9a43-1d6c1e6f3b10", "processing", "7%", "2026-11-28 15:31:07Z"]],
    )
    assert "…" not in out.getvalue()
    # What does not fold: the columns before FILENAME, and its longest word.
    least = lines[0].index("FILENAME") + len("markup[/bold].mp3")
    assert max(len(line.rstrip()) for line in lines) <= max(width, least)
    if width >= least + len("a rather long file name "):
        assert len(lines) == 3  # room enough: nothing folds


# -- Progress -------------------------------------------------------------------------------------

SONG_BYTES = bytes(range(256)) * 4096  # 1 MiB: sixteen reads of the upload


def separation_server() -> Handler:
    answers = iter([("pending", 0), ("processing", 35), ("processing", 80), ("completed", 100)])

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/upload":
            assert len(request.read()) > len(SONG_BYTES)  # the whole body, streamed
            return httpx.Response(200, json={"job_id": "job-1", "status": "pending"})
        if request.url.path == "/status/job-1":
            word, percent = next(answers)
            return httpx.Response(200, json={"status": word, "progress": percent})
        return httpx.Response(
            200,
            content=SONG_BYTES,
            headers={"content-disposition": 'attachment; filename="song_stems.zip"'},
        )

    return handler


def run_separate(
    serve: Callable[[Handler], list[httpx.Request]],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    console: Console | None = None,
) -> None:
    serve(separation_server())
    monkeypatch.setattr("stemkube_client.cli.time.sleep", lambda seconds: None)
    if console is not None:
        monkeypatch.setattr(cli, "Progress", functools.partial(Progress, console=console))
    song = tmp_path / "song.mp3"
    song.write_bytes(SONG_BYTES)
    out = tmp_path / "out.zip"
    assert cli.main(["separate", str(song), "-o", str(out)]) == cli.EXIT_OK
    assert out.read_bytes() == SONG_BYTES


def test_off_a_terminal_progress_is_plain_lines_with_growing_numbers(
    serve: Callable[[Handler], list[httpx.Request]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    run_separate(serve, monkeypatch, tmp_path)
    err = capsys.readouterr().err
    assert not re.search(r"[\x00-\x09\x0b-\x1f\x7f]", err)  # no control character but \n
    lines = err.splitlines()
    uploads = [line for line in lines if line.startswith("uploading song.mp3: ")]
    assert uploads[0] == "uploading song.mp3: 0% (0 bytes of 1.0 MB)"
    assert uploads[-1] == "uploading song.mp3: 100% (1.0 MB of 1.0 MB)"
    assert len(uploads) == 11  # a line a tenth: throttled, however many reads
    numbers = [int(line.split(": ")[1].split("%")[0]) for line in uploads]
    assert numbers == sorted(set(numbers))
    assert "job job-1 created" in lines
    follow = [line for line in lines if line.startswith("job job-1:")]
    assert follow == [
        "job job-1: pending 0%",
        "job job-1: processing 35%",
        "job job-1: processing 80%",
        "job job-1: completed 100%",
    ]
    downloads = [line for line in lines if line.startswith("downloading out.zip: ")]
    assert downloads[0].startswith("downloading out.zip: 0% ")
    assert downloads[-1] == "downloading out.zip: 100% (1.0 MB of 1.0 MB)"


def test_on_a_terminal_progress_is_a_bar_that_ends_full(
    serve: Callable[[Handler], list[httpx.Request]],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=120, color_system=None)
    run_separate(serve, monkeypatch, tmp_path, console)
    drawn = screen.getvalue()
    assert "\r" in drawn or "\x1b[" in drawn  # redrawn in place, not line after line
    # The last drawing of each phase's bar: full, at 100 %.
    frames = [frame for frame in re.split(r"[\r\n]|\x1b\[[0-9;?]*[A-Za-z]", drawn) if frame]
    for phase in ("uploading song.mp3", "job job-1: completed", "downloading out.zip"):
        last = [frame for frame in frames if frame.startswith(phase)][-1]
        assert "100%" in last, last
        assert "━" in last, last
    assert "job job-1 created" in frames


@pytest.mark.parametrize(
    ("last", "code"), [("completed", cli.EXIT_OK), ("failed", cli.EXIT_FAILED)]
)
def test_wait_follows_a_job_to_its_end(
    serve: Callable[[Handler], list[httpx.Request]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    last: str,
    code: int,
) -> None:
    answers = iter([("processing", 20), ("processing", 20), ("processing", 60), (last, 100)])

    def handler(request: httpx.Request) -> httpx.Response:
        word, percent = next(answers)
        return httpx.Response(200, json={"status": word, "progress": percent, "error": "boom"})

    serve(handler)
    monkeypatch.setattr("stemkube_client.cli.time.sleep", lambda seconds: None)
    assert cli.main(["wait", "job-1", "--poll-interval=0"]) == code
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert lines[:4] == [
        "job job-1: pending 0%",
        "job job-1: processing 20%",  # once: nothing changed at the second poll
        "job job-1: processing 60%",
        f"job job-1: {last} 100%",
    ]
    if last == "completed":
        assert out.strip() == "job job-1 completed"
    else:
        assert lines[-1] == "stemkube: job job-1 failed: boom"
