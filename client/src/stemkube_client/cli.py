"""``stemkube``: the command-line client of the REST API.

Exit codes: 0 done; 1 the job failed; 2 usage (bad arguments, no such local file);
3 the server is unreachable or answered with an error (a refused API key too); 4 no such job.

The API key (``--api-key``, else ``$STEMKUBE_API_KEY``) goes in ``Authorization: Bearer``
and nowhere else: never printed, never in a message.
"""

import argparse
import contextlib
import email.message
import email.utils
import json
import os
import re
import sys
import time
import unicodedata
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any, NoReturn

import httpx
from rich.console import Console

from stemkube_client import __version__
from stemkube_client.direct import upload_direct
from stemkube_client.progress import PERCENT, Progress
from stemkube_client.table import print_jobs
from stemkube_contract import options as catalogue
from stemkube_contract.formats import AUDIO_EXTENSIONS
from stemkube_contract.limits import parse_size

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_SERVER, EXIT_NOT_FOUND = 0, 1, 2, 3, 4
DEFAULT_URL = "http://localhost:8000"
KEY_ENV = "STEMKUBE_API_KEY"
CHUNK = 256 * 1024
DIRECT_UPLOAD_THRESHOLD = 64 * 1024 * 1024


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


class CliError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class RateLimitedError(CliError):
    """A 429: the key's rate limit (``detail``: the server's words); ``retry_after``: its
    Retry-After in seconds."""

    def __init__(self, message: str, detail: str, retry_after: int | None) -> None:
        super().__init__(EXIT_SERVER, message)
        self.detail = detail
        self.retry_after = retry_after


def api_key(given: str | None) -> str | None:
    """The key to send: ``--api-key``, else ``$STEMKUBE_API_KEY`` (surrounding whitespace, as
    ``$(cat file)`` leaves it, dropped); None for none. A key is printable ASCII: anything
    else is a usage error that does not repeat the key."""
    key = (given if given is not None else os.environ.get(KEY_ENV, "")).strip()
    if not key:
        return None
    if not all("!" <= char <= "~" for char in key):
        raise CliError(
            EXIT_USAGE,
            f"the API key (--api-key or ${KEY_ENV}) has spaces, control or non-ASCII "
            "characters, which no key has; nothing was sent",
        )
    return key


def _retry_after(response: httpx.Response) -> int | None:
    """Retry-After in seconds (the API sends seconds), or None."""
    value = response.headers.get("retry-after", "").strip()
    return int(value) if value.isdigit() else None


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:200] or response.reason_phrase
    if isinstance(body, dict) and "detail" in body:
        return str(body["detail"])
    return json.dumps(body)[:200]


class Api:
    def __init__(
        self,
        url: str,
        key: str | None = None,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.keyed = key is not None
        headers = {"User-Agent": f"stemkube/{__version__}"}
        if key is not None:
            # httpx drops it on a redirect to another origin (a presigned download's store).
            headers["Authorization"] = f"Bearer {key}"
        self.http = httpx.Client(
            base_url=self.url,
            timeout=httpx.Timeout(timeout, connect=10.0),
            headers=headers,
            transport=transport,
        )

    def close(self) -> None:
        self.http.close()

    def _fail(self, exc: Exception) -> NoReturn:
        raise CliError(
            EXIT_SERVER,
            f"cannot reach the stemkube API at {self.url} ({type(exc).__name__}: {exc}); "
            "is it running? (--api-url or STEMKUBE_API_URL)",
        )

    def check(self, response: httpx.Response, what: str) -> httpx.Response:
        code = response.status_code
        if code == 404:
            detail = _detail(response)
            # The API's own words name the job already ("job X not found"): say them once.
            said = detail if detail.startswith(what) else f"{what}: {detail}"
            raise CliError(EXIT_NOT_FOUND, said)
        if code == 401:
            hint = (
                f"the key of --api-key or ${KEY_ENV} was refused"
                if self.keyed
                else f"give the API key with --api-key or ${KEY_ENV}"
            )
            raise CliError(EXIT_SERVER, f"{what}: HTTP 401: {_detail(response)} ({hint})")
        if code == 429:
            detail, retry = _detail(response), _retry_after(response)
            when = f" (retry after {retry} s)" if retry is not None else ""
            raise RateLimitedError(f"{what}: HTTP 429: {detail}{when}", detail, retry)
        if code >= 400:
            raise CliError(EXIT_SERVER, f"{what}: HTTP {code}: {_detail(response)}")
        return response

    def request(self, method: str, path: str, what: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            self._fail(exc)
        return self.check(response, what)

    def json(self, method: str, path: str, what: str, **kwargs: Any) -> Any:
        return self.request(method, path, what, **kwargs).json()


class _CountingFile:
    """A file httpx streams from (in chunks, never whole) that reports how far it got."""

    def __init__(self, handle: IO[bytes], progress: Progress) -> None:
        self._handle = handle
        self._progress = progress
        self.sent = 0

    def read(self, size: int = -1) -> bytes:
        data = self._handle.read(size if size and size > 0 else CHUNK)
        self.sent += len(data)
        self._progress.update(self.sent)
        return data

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        self.sent = 0 if offset == 0 and whence == os.SEEK_SET else self.sent
        return self._handle.seek(offset, whence)

    def tell(self) -> int:
        return self._handle.tell()

    def fileno(self) -> int:
        return self._handle.fileno()


def _filename_from(response: httpx.Response) -> str | None:
    """The server's name for a download: the exact ``filename*`` (RFC 6266 puts it first; the
    plain ``filename`` beside it is an ASCII stand-in), else ``filename``; only its last path
    component, without control characters."""
    header = response.headers.get("content-disposition")
    if not header:
        return None
    message = email.message.Message()
    message["content-disposition"] = header
    # email decodes filename* to (charset, language, text), a plain filename to str (its stubs
    # say str for both).
    params: list[tuple[str, str | tuple[str, str, str]]] = message.get_params(
        [], header="content-disposition"
    )  # type: ignore[assignment]
    names = [value for key, value in params if key.lower() == "filename"]
    names.sort(key=lambda value: not isinstance(value, tuple))
    if not names:
        return None
    name = email.utils.collapse_rfc2231_value(names[0], errors="replace")
    name = "".join(c for c in name if unicodedata.category(c)[0] != "C")
    name = re.split(r"[\\/]", name)[-1].strip()
    return name if name not in ("", ".", "..") else None


def upload(api: Api, path: Path, fields: dict[str, str], progress: Progress) -> dict[str, Any]:
    size = path.stat().st_size
    with path.open("rb") as handle:
        counting = _CountingFile(handle, progress)
        progress.start(f"uploading {path.name}", size)
        try:
            response = api.http.post(
                "/upload",
                files={"file": (path.name, counting, "application/octet-stream")},  # type: ignore[dict-item]
                data=fields,
                timeout=httpx.Timeout(60.0, connect=10.0, write=120.0),
            )
        except httpx.TransportError as exc:
            api._fail(exc)
        finally:
            progress.stop()
    body: dict[str, Any] = api.check(response, f"upload of {path.name}").json()
    return body


def sse_events(lines: Iterator[str]) -> Iterator[tuple[str, str]]:
    """(event, data) of a Server-Sent Events stream's lines; comments (``: ping``) and
    ``id:``/``retry:`` lines are skipped."""
    event, data = "message", list[str]()
    for line in lines:
        if not line:
            if data:
                yield event, "\n".join(data)
            event, data = "message", []
        elif line.startswith(":"):
            continue
        else:
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "event":
                event = value
            elif name == "data":
                data.append(value)
    if data:
        yield event, "\n".join(data)


# Longer than the server's keep-alive (a comment every 15 s): a silent stream is a dead one.
EVENTS_READ_TIMEOUT = 45.0


def follow_events(api: Api, job_id: str, progress: Progress) -> dict[str, Any] | None:
    """Follows the job through ``GET /jobs/{job_id}/events`` until it ends: its last status;
    None where the server offers no stream (an older server's 404, a 429 past its streams)
    or the connection fails, so that the caller polls instead."""
    path = f"/jobs/{job_id}/events"
    while True:  # a new stream after the server's "reconnect" (its streams' lifetime)
        try:
            with api.http.stream(
                "GET",
                path,
                headers={"Accept": "text/event-stream"},
                timeout=httpx.Timeout(30.0, connect=10.0, read=EVENTS_READ_TIMEOUT),
            ) as response:
                if response.status_code in (404, 405, 429, 501):
                    return None  # no such route (or job: polling says which), or no room
                if response.status_code >= 400:
                    response.read()
                    api.check(response, f"job {job_id}")
                if not response.headers.get("content-type", "").startswith("text/event-stream"):
                    return None
                status: dict[str, Any] | None = None
                for event, data in sse_events(response.iter_lines()):
                    if event == "status":
                        status = json.loads(data)
                        assert status is not None
                        word, percent = status["status"], int(status.get("progress") or 0)
                        progress.update(percent, f"job {job_id}: {word}")
                        if word in ("completed", "failed"):
                            return status
                    elif event == "deleted":
                        raise CliError(EXIT_NOT_FOUND, f"job {job_id} was deleted")
                    elif event == "reconnect":
                        break
                else:
                    return None  # closed without an end: poll from here
        except (httpx.TransportError, ValueError, KeyError):
            return None


def follow(
    api: Api, job_id: str, progress: Progress, interval: float, events: bool = False
) -> dict[str, Any]:
    """Follows the job until it finishes: its last status. Through the server's event stream
    where it offers one (``events``), else by polling /status every ``interval`` seconds:
    past the key's rate limit it waits as the server's Retry-After says, and polls on (the
    job is made, its stems are to come)."""
    progress.start(f"job {job_id}: pending", 100, PERCENT)
    try:
        if events:
            done = follow_events(api, job_id, progress)
            if done is not None:
                return done
        while True:
            try:
                status: dict[str, Any] = api.json("GET", f"/status/{job_id}", f"job {job_id}")
            except RateLimitedError as exc:
                wait = max(exc.retry_after or 0, interval)
                progress.say(f"job {job_id}: HTTP 429: {exc.detail}; polling again in {wait:g} s")
                time.sleep(wait)
                continue
            word, percent = status["status"], int(status.get("progress") or 0)
            progress.update(percent, f"job {job_id}: {word}")
            if word in ("completed", "failed"):
                return status
            time.sleep(interval)
    finally:
        progress.stop()


def save_path(output: str | None, name: str) -> Path:
    """Where a download goes: ``output`` as given; in it under ``name`` (the server's) when it
    is a folder: one that exists, or one written with a trailing separator, made here.
    Without ``output``: ``name`` in the current folder."""
    if not output:
        return Path(name)
    folder = Path(output)
    separators = tuple(sep for sep in (os.sep, os.altsep, "/") if sep)
    if output.endswith(separators):
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CliError(EXIT_USAGE, f"cannot make the folder {output}: {exc.strerror}") from None
        return folder / name
    return folder / name if folder.is_dir() else folder


def download(
    api: Api, job_id: str, output: str | None, progress: Progress, path: str | None = None
) -> Path:
    url = path or f"/download/{job_id}"
    try:
        with api.http.stream(
            "GET", url, follow_redirects=True, timeout=httpx.Timeout(60.0, connect=10.0)
        ) as response:
            if response.status_code >= 400:
                response.read()
                api.check(response, f"download of job {job_id}")
            target = save_path(output, _filename_from(response) or f"{job_id}.zip")
            total = int(response.headers.get("content-length") or 0) or None
            partial = target.with_name(target.name + ".part")
            progress.start(f"downloading {target.name}", total)
            try:
                written = 0
                with _create(partial) as out:
                    for chunk in response.iter_bytes(CHUNK):
                        out.write(chunk)
                        written += len(chunk)
                        # Bytes off the wire, as Content-Length counts them (compressed, if
                        # so); a body that came whole (no wire to count) by what was written.
                        progress.update(response.num_bytes_downloaded or written)
                os.replace(partial, target)
            finally:
                progress.stop()
                partial.unlink(missing_ok=True)
    except httpx.TransportError as exc:
        api._fail(exc)
    return target


def _create(path: Path) -> IO[bytes]:
    try:
        return path.open("wb")
    except OSError as exc:
        raise CliError(EXIT_USAGE, f"cannot write {path}: {exc.strerror}") from None


def _fields(args: argparse.Namespace) -> dict[str, str]:
    """The options given on the command line, as the upload form's fields."""
    given = catalogue.from_namespace(args, given_only=True)
    return {name: catalogue.BY_NAME[name].text(value) for name, value in given.items()}


def songs_of(paths: Sequence[str]) -> list[Path]:
    """The songs of ``separate``'s paths, in order: a file as given; a folder's audio files
    directly in it (by the contract's extensions, sorted by name: the server tells a file's
    format from its bytes, the extension only picks files)."""
    songs: list[Path] = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            found = sorted(
                p
                for p in path.iterdir()
                if p.is_file() and p.suffix.lower().removeprefix(".") in AUDIO_EXTENSIONS
            )
            if not found:
                raise CliError(EXIT_USAGE, f"no audio files in {path}")
            songs += found
        elif path.is_file():
            songs.append(path)
        else:
            raise CliError(EXIT_USAGE, f"no such file: {path}")
    return songs


class _SharedCount:
    """The bytes of several files sent in one request, as one phase's progress."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.sent = 0


class _CountingPart(_CountingFile):
    def __init__(self, handle: IO[bytes], shared: _SharedCount) -> None:
        super().__init__(handle, shared.progress)
        self._shared = shared

    def read(self, size: int = -1) -> bytes:
        data = self._handle.read(size if size and size > 0 else CHUNK)
        self._shared.sent += len(data)
        self._shared.progress.update(self._shared.sent)
        return data


def upload_batch(
    api: Api, songs: list[Path], fields: dict[str, str], progress: Progress, threshold: int
) -> dict[str, Any]:
    """One batch of ``songs``: one multipart request, or, when a song is larger than
    ``threshold``, each song by direct upload (no job) and a JSON batch naming them."""
    if any(song.stat().st_size > threshold for song in songs):
        sources = []
        for song in songs:
            ready = upload_direct(api, song, fields, progress, create_job=False)
            sources.append({"upload_id": ready["upload_id"]})
        body: dict[str, Any] = api.json(
            "POST", "/batches", "batch", json={"sources": sources, "options": fields}
        )
        return body
    total = sum(song.stat().st_size for song in songs)
    shared = _SharedCount(progress)
    with contextlib.ExitStack() as stack:
        handles = [stack.enter_context(song.open("rb")) for song in songs]
        files = [
            ("file", (song.name, _CountingPart(handle, shared), "application/octet-stream"))
            for song, handle in zip(songs, handles, strict=True)
        ]
        progress.start(f"uploading {len(songs)} songs", total)
        try:
            response = api.http.post(
                "/batches",
                files=files,  # type: ignore[arg-type]
                data=fields,
                timeout=httpx.Timeout(60.0, connect=10.0, write=120.0),
            )
        except httpx.TransportError as exc:
            api._fail(exc)
        finally:
            progress.stop()
    created: dict[str, Any] = api.check(response, f"batch of {len(songs)} songs").json()
    return created


def follow_batch(
    api: Api, batch_id: str, names: dict[str, str], progress: Progress, interval: float
) -> dict[str, dict[str, Any]]:
    """Follows the batch's jobs (``names``: job id -> song) until each has finished or gone,
    by polling ``GET /batches/{id}`` (one request for every song): each job's last status; a
    deleted job is missing."""
    order = list(names)
    progress.start_songs([names[job_id] for job_id in order])
    last: dict[str, dict[str, Any]] = {}
    try:
        while True:
            try:
                batch: dict[str, Any] = api.json("GET", f"/batches/{batch_id}", f"batch {batch_id}")
            except RateLimitedError as exc:
                wait = max(exc.retry_after or 0, interval)
                progress.say(
                    f"batch {batch_id}: HTTP 429: {exc.detail}; polling again in {wait:g} s"
                )
                time.sleep(wait)
                continue
            seen = {job["job_id"]: job for job in batch["jobs"]}
            for index, job_id in enumerate(order):
                job = seen.get(job_id)
                if job is None:
                    progress.update_song(index, 0, "deleted")
                    last.pop(job_id, None)
                    continue
                last[job_id] = job
                progress.update_song(index, int(job.get("progress") or 0), job["status"])
            if all(
                job_id not in seen or seen[job_id]["status"] in ("completed", "failed")
                for job_id in order
            ):
                return last
            time.sleep(interval)
    finally:
        progress.stop()


def separate_batch(
    api: Api, args: argparse.Namespace, songs: list[Path], progress: Progress
) -> int:
    created = upload_batch(api, songs, _fields(args), progress, args.direct_upload_threshold)
    batch_id = created["batch_id"]
    names = {job["job_id"]: job["filename"] for job in created["jobs"]}
    progress.say(f"batch {batch_id} created: {len(names)} jobs")
    done = follow_batch(api, batch_id, names, progress, args.poll_interval)
    # Several ZIPs go in a folder: --output names it (made if need be), else the current one.
    output = args.output.rstrip("/" + os.sep) + os.sep if args.output else None
    failed = []
    for job_id, name in names.items():
        status = done.get(job_id)
        if status is None:
            failed.append(f"job {job_id} ({name}) was deleted")
        elif status["status"] == "failed":
            failed.append(f"job {job_id} ({name}) failed: {status.get('error') or 'no reason'}")
        else:
            print(download(api, job_id, output, progress))
    if failed:
        raise CliError(EXIT_FAILED, "; ".join(failed))
    return EXIT_OK


def cmd_separate(api: Api, args: argparse.Namespace, progress: Progress) -> int:
    songs = songs_of(args.file)
    if len(args.file) > 1 or Path(args.file[0]).is_dir():
        return separate_batch(api, args, songs, progress)
    path = songs[0]
    if path.stat().st_size > args.direct_upload_threshold:
        created = upload_direct(api, path, _fields(args), progress)
    else:
        created = upload(api, path, _fields(args), progress)
    job_id = created["job_id"]
    progress.say(f"job {job_id} created")
    status = follow(api, job_id, progress, args.poll_interval, not args.poll)
    if status["status"] == "failed":
        raise CliError(EXIT_FAILED, f"job {job_id} failed: {status.get('error') or 'no reason'}")
    target = download(api, job_id, args.output, progress)
    print(target)
    return EXIT_OK


def cmd_status(api: Api, args: argparse.Namespace, progress: Progress) -> int:
    status = api.json("GET", f"/status/{args.job_id}", f"job {args.job_id}")
    if args.json:
        print(json.dumps(status, indent=2))
    else:
        for key in (
            "job_id",
            "status",
            "progress",
            "filename",
            "created_at",
            "started_at",
            "completed_at",
            "model",
            "format",
            "stems",
            "error",
        ):
            value = status.get(key)
            if value is None:
                continue
            if isinstance(value, list):
                value = ", ".join(value)
            print(f"{key + ':':14} {value}")
    return EXIT_FAILED if status["status"] == "failed" else EXIT_OK


def cmd_list(api: Api, args: argparse.Namespace, progress: Progress) -> int:
    params: dict[str, str | int] = {}
    if args.status:
        params["status"] = args.status
    if args.tenant:
        params["tenant"] = args.tenant
    jobs: list[dict[str, Any]] = []
    cursor = None
    while True:
        if cursor:
            params["cursor"] = cursor
        page = api.json("GET", "/jobs", "job list", params={**params, "limit": 500})
        jobs += page["jobs"]
        cursor = page.get("next_cursor")
        if not cursor or (args.limit and len(jobs) >= args.limit):
            break
    if args.limit:
        jobs = jobs[: args.limit]
    if args.json:
        print(json.dumps(jobs, indent=2))
        return EXIT_OK
    print_jobs(jobs, Console())
    return EXIT_OK


def cmd_wait(api: Api, args: argparse.Namespace, progress: Progress) -> int:
    status = follow(api, args.job_id, progress, args.poll_interval, not args.poll)
    if status["status"] == "failed":
        raise CliError(
            EXIT_FAILED, f"job {args.job_id} failed: {status.get('error') or 'no reason'}"
        )
    print(f"job {args.job_id} {status['status']}")
    return EXIT_OK


def cmd_download(api: Api, args: argparse.Namespace, progress: Progress) -> int:
    path = f"/download/{args.job_id}" + (f"/{args.stem}" if args.stem else "")
    target = download(api, args.job_id, args.output, progress, path)
    print(target)
    return EXIT_OK


def cmd_delete(api: Api, args: argparse.Namespace, progress: Progress) -> int:
    body = api.json("DELETE", f"/job/{args.job_id}", f"job {args.job_id}")
    print(body.get("message") or f"job {args.job_id} deleted")
    return EXIT_OK


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stemkube",
        description="Split songs into stems with a stemkube server.",
        epilog=(
            "exit codes: 0 done, 1 the job failed, 2 usage error, "
            "3 server unreachable or HTTP error (a refused API key too), 4 no such job"
        ),
    )
    parser.add_argument(
        "--api-url",
        default=os.environ.get("STEMKUBE_API_URL") or DEFAULT_URL,
        help=f"the API's URL (default: $STEMKUBE_API_URL or {DEFAULT_URL})",
    )
    # api_key() reads the environment, not a default here: --help shows no key.
    parser.add_argument(
        "--api-key",
        metavar="KEY",
        help=f"the API key, sent as 'Authorization: Bearer' (default: ${KEY_ENV}, which "
        "keeps it out of the process list and shell history)",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    parser.add_argument("--version", action="version", version=f"stemkube {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    separate = commands.add_parser(
        "separate",
        help="upload a song (or several: one batch), wait for its stems, download the ZIP",
    )
    separate.add_argument(
        "file",
        nargs="+",
        help="the song; or several songs and folders (a folder: the audio files directly in "
        "it), sent as one batch (POST /batches) and followed with a bar each",
    )
    separate.add_argument(
        "-o",
        "--output",
        help="where to save the ZIP (default: <song>_stems.zip here); with several songs, "
        "the folder for their ZIPs (made if need be)",
    )
    # The separation options, as the server's catalogue states them; the server's own
    # defaults apply to what is not given.
    catalogue.add_arguments(separate.add_argument_group("separation options"), defaults=False)
    separate.add_argument(
        "--poll-interval", type=float, default=1.0, help="seconds between status checks"
    )
    separate.add_argument(
        "--poll",
        action="store_true",
        help="poll /status instead of following the server's event stream",
    )
    separate.add_argument(
        "--direct-upload-threshold",
        type=_size,
        default=DIRECT_UPLOAD_THRESHOLD,
        metavar="BYTES",
        help="files larger than this go in parts straight to the server's storage "
        "(POST /uploads) instead of through /upload (default 64MiB; e.g. 100MB, 1GiB)",
    )
    separate.set_defaults(run=cmd_separate)

    status = commands.add_parser("status", help="a job's status")
    status.add_argument("job_id")
    status.add_argument("--json", action="store_true", help="the API's JSON")
    status.set_defaults(run=cmd_status)

    listing = commands.add_parser("list", help="jobs, newest first")
    listing.add_argument("--status", choices=("pending", "processing", "completed", "failed"))
    listing.add_argument("--tenant", help="only this tenant's jobs (admin keys only)")
    listing.add_argument("--limit", type=int, help="at most this many")
    listing.add_argument("--json", action="store_true", help="the API's JSON")
    listing.set_defaults(run=cmd_list)

    wait = commands.add_parser("wait", help="follow a job until it is completed or failed")
    wait.add_argument("job_id")
    wait.add_argument(
        "--poll-interval", type=float, default=1.0, help="seconds between status checks"
    )
    wait.add_argument(
        "--poll",
        action="store_true",
        help="poll /status instead of following the server's event stream",
    )
    wait.set_defaults(run=cmd_wait)

    get = commands.add_parser("download", help="download a completed job's ZIP (or one stem)")
    get.add_argument("job_id")
    get.add_argument("--stem", help="only this stem")
    get.add_argument("-o", "--output", help="file or folder to save to")
    get.set_defaults(run=cmd_download)

    delete = commands.add_parser("delete", help="cancel and delete a job and its files")
    delete.add_argument("job_id")
    delete.set_defaults(run=cmd_delete)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    progress = Progress(args.quiet)
    try:
        key = api_key(args.api_key)
    except CliError as exc:
        print(f"stemkube: {exc}", file=sys.stderr)
        return exc.code
    api = Api(args.api_url, key)
    try:
        code: int = args.run(api, args, progress)
        return code
    except CliError as exc:
        progress.stop()
        print(f"stemkube: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        progress.stop()
        print("stemkube: interrupted", file=sys.stderr)
        return 130
    finally:
        api.close()


if __name__ == "__main__":
    sys.exit(main())
