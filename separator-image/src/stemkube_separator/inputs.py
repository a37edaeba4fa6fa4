"""The input song: fetched and decoded without torch, so that a single run can do it while
torch imports, the GPU initialises and the weights load (``Early``), and a batch while the
previous song separates. Nothing here imports torch or Demucs.
"""

import contextlib
import logging
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

from minio import Minio

from stemkube_contract import joblink, urls
from stemkube_separator import decode, link, linkstorage, logs, s3, storage, urlfetch
from stemkube_separator.errors import UsageError
from stemkube_separator.linkstorage import LinkStore, Store, no_client
from stemkube_separator.locations import Location, S3Object, parse_location
from stemkube_separator.options import Options
from stemkube_separator.urlfetch import FetchSettings, SourceURL

log = logging.getLogger(__name__)

# Every Demucs model works at 44.1 kHz: an early decode assumes it, and a model of another
# rate has the song decoded again once it is loaded.
DEMUCS_SAMPLERATE = 44100


def s3_clients(env: Mapping[str, str], *locations: str) -> storage.ClientFactory:
    """Clients for ``locations`` from the AWS variables; the settings are read (and a
    malformed endpoint refused, a usage error) now, only if one of them is an S3 object."""
    settings = s3.S3Settings.from_env(env) if any("s3://" in x for x in locations) else None

    def client() -> Minio:
        assert settings is not None
        return s3.client(settings)

    return client


# Where a song comes from: a local file, an S3 object, or an http(s) URL (``urlfetch``).
Source = Location | SourceURL


def shown(text: str) -> str:
    """An INPUT as log lines show it: a URL without its query or user information."""
    return urls.redact(text) if urls.is_url(text) else text


def parse_source(text: str, env: Mapping[str, str]) -> Source:
    """INPUT: a local path, ``s3://bucket/key``, an http(s) URL, or ``env:STEMKUBE_INPUT_URL``
    (the URL in that variable: how a Job gets it, out of its command line). A URL's fetch
    settings (refused and allowed ranges, timeouts) come from ``env``; a malformed one, or
    the variable not holding a URL, is a usage error."""
    if text == urls.INPUT_FROM_ENV:
        text = env.get(urls.INPUT_URL_ENV, "")
        if not urls.is_url(text):
            raise UsageError(
                f"INPUT {urls.INPUT_FROM_ENV}: the variable {urls.INPUT_URL_ENV} must hold an "
                "http(s) URL" + ("" if text else "; it is not set")
            )
    if urls.is_url(text):
        return SourceURL(text, FetchSettings.from_env(env))
    return parse_location(text)


def single_store(opts: Options, env: Mapping[str, str]) -> Store:
    """What reaches a single run's S3 locations: the job link in link mode (asking for the
    SeparationJob of ``--progress-cr``), else a client from the AWS variables."""
    linked = link.from_env(env)
    if linked is None:
        return s3_clients(env, opts.input, opts.output)
    if opts.progress_cr is None:
        raise UsageError(
            f"{joblink.URL_ENV} is set (link mode): --progress-cr NAMESPACE/NAME must name the "
            "SeparationJob whose input, output and status the run asks the job link for"
        )
    return linkstorage.link_store(linked, *opts.progress_cr)


def fetch_input(source: Source, workdir: Path, s3_client: Store, max_size: int) -> Path:
    """INPUT as a local file (an S3 object or a URL's file downloaded into ``workdir``),
    refused when larger than ``max_size`` bytes: the ``fetch`` stage."""
    if isinstance(source, SourceURL):
        return urlfetch.fetch(source, workdir / "input", max_size)
    if isinstance(s3_client, LinkStore):
        if isinstance(source, S3Object):
            return linkstorage.fetch_input(source, workdir, s3_client, max_size)
        return storage.fetch_input(source, workdir, no_client, max_size)
    return storage.fetch_input(source, workdir, s3_client, max_size)


def decode_input(
    local_input: Path, workdir: Path, samplerate: int, max_duration: float, keep: bool = False
) -> tuple[decode.Audio, float]:
    """The song decoded (the ``decode`` stage) and its length in seconds; a download is
    removed once decoded, unless ``keep``."""
    audio, info = decode.decode(local_input, samplerate, max_duration)
    if local_input.parent == workdir and not keep:
        local_input.unlink()  # the download is no longer needed; free the disk
    seconds = audio.shape[1] / samplerate
    log.info(
        "decoded %.2f s of %s/%s, %d Hz, %d channels (%s)",
        seconds,
        info.container,
        info.codec,
        info.sample_rate,
        info.channels,
        info.layout,
        extra={"duration": round(seconds, 3)},
    )
    return audio, seconds


class Early:
    """The song fetched and decoded in a thread of its own from the program's first moments:
    what was a sequence (import torch, load the model, fetch, decode) overlaps, and the run
    waits only for what is left when the model is ready. Owns the run's work folder."""

    def __init__(
        self,
        source: Source,
        s3_client: Store,
        max_duration: float,
        max_size: int,
    ) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="stemkube-")
        self.workdir = Path(self._tmp.name)
        self.source, self.s3_client, self.max_duration = source, s3_client, max_duration
        self.max_size = max_size
        self.fetched, self.decoded = threading.Event(), threading.Event()
        self.local_input: Path | None = None
        self.audio: decode.Audio | None = None
        self.seconds = 0.0
        self.error: BaseException | None = None
        self._job = logs.thread_job()
        self._thread = threading.Thread(target=self._run, name="early-input", daemon=True)

    def __enter__(self) -> "Early":
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        # Not joined: a download still running when the run failed or was terminated is
        # abandoned (the process ends right after); its folder goes now.
        with contextlib.suppress(OSError):
            self._tmp.cleanup()

    def _run(self) -> None:
        # A batch member's thread names its member; else the process's job applies.
        with logs.job(self._job) if self._job else contextlib.nullcontext():
            try:
                self.local_input = fetch_input(
                    self.source, self.workdir, self.s3_client, self.max_size
                )
                self.fetched.set()
                self.audio, self.seconds = decode_input(
                    self.local_input, self.workdir, DEMUCS_SAMPLERATE, self.max_duration, keep=True
                )
            except BaseException as exc:  # handed to the run, which raises it as its own
                self.error = exc
            finally:
                self.fetched.set()
                self.decoded.set()

    def wait_fetched(self) -> None:
        self.fetched.wait()
        if self.local_input is None and self.error is not None:
            raise self.error

    def take_audio(self, samplerate: int) -> tuple[decode.Audio, float]:
        """The decoded song at ``samplerate`` (the model's), once; the download then goes."""
        self.decoded.wait()
        if self.error is not None:
            raise self.error
        assert self.local_input is not None
        assert self.audio is not None
        audio, seconds = self.audio, self.seconds
        self.audio = None
        if samplerate != DEMUCS_SAMPLERATE:
            audio, seconds = decode_input(
                self.local_input, self.workdir, samplerate, self.max_duration, keep=True
            )
        if self.local_input.parent == self.workdir:
            self.local_input.unlink(missing_ok=True)  # no longer needed; free the disk
        return audio, seconds


def start_early(opts: Options, env: Mapping[str, str]) -> Early:
    """The song's fetch and decode, not yet started (``with`` starts it); a malformed S3
    setting or location is a usage error now, before any thread."""
    source = parse_source(opts.input, env)
    parse_location(opts.output)
    return Early(source, single_store(opts, env), opts.max_duration, opts.max_file_size)
