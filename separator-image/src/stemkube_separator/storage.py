"""Getting INPUT to a local file and writing OUTPUT so it appears whole or not at all.

Local OUTPUT: a temporary file beside the target, renamed over it when complete.
S3 OUTPUT: the bytes stream through a bounded pipe into a multipart upload running in a
thread; an exception on either side aborts the upload, so no partial object ever appears.
"""

import contextlib
import logging
import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO, NoReturn, cast

import urllib3.exceptions
from minio import Minio
from minio.error import MinioException, S3Error
from urllib3 import BaseHTTPResponse

from stemkube_contract.limits import format_size
from stemkube_separator import logs
from stemkube_separator.errors import InvalidInputError, TransientError, UsageError
from stemkube_separator.locations import Location, S3Object

log = logging.getLogger(__name__)

PART_SIZE = 16 << 20  # multipart part; S3's minimum is 5 MiB
PIPE_LIMIT = 2 * PART_SIZE  # bytes buffered between the ZIP writer and the upload

ClientFactory = Callable[[], Minio]


class StoreAnswerError(Exception):
    """An error answer of the store to a presigned URL (no S3 client parses it there)."""

    def __init__(self, status: int, code: str = "", message: str = "") -> None:
        super().__init__(f"S3 error {code}: {message}" if code else f"HTTP {status}")
        self.status, self.code = status, code


def storage_error(what: str, exc: BaseException) -> TransientError:
    """A storage failure in words, e.g. "downloading s3://b/k: S3 error NoSuchKey: ..."."""
    if isinstance(exc, S3Error):
        reason = f"S3 error {exc.code}: {exc.message}"
    elif isinstance(exc, StoreAnswerError):
        reason = str(exc)
    elif isinstance(exc, urllib3.exceptions.MaxRetryError):
        reason = f"storage unreachable: {exc.reason}"
    else:
        reason = f"{type(exc).__name__}: {exc}"
    return TransientError(f"{what}: {reason}")


_STORAGE_ERRORS = (MinioException, urllib3.exceptions.HTTPError, OSError)


# An input object that is not there will not appear on a retry: the job named it wrong. (A
# missing bucket stays transient: storage being set up, or a deployment's mistake.)
_MISSING = ("NoSuchKey",)
_CHUNK = 1 << 20  # download in 1 MiB reads


def too_large(what: object, size: int, limit: int) -> InvalidInputError:
    return InvalidInputError(
        f"the input {what} is {format_size(size)} ({size} bytes); the limit is "
        f"{format_size(limit)} ({limit} bytes)"
    )


def fetch_input(location: Location, workdir: Path, s3: ClientFactory, max_size: int) -> Path:
    """INPUT as a local file: an S3 object is downloaded into ``workdir``. Anything larger
    than ``max_size`` bytes is refused before (the object's stated size) and while (what
    actually arrives) it is downloaded: the scratch folder is a node's disk."""
    if isinstance(location, Path):
        if not location.exists():
            raise InvalidInputError(f"the input file {location} does not exist")
        if location.is_file() and (size := location.stat().st_size) > max_size:
            raise too_large(location, size, max_size)
        return location
    target = workdir / "input"
    try:
        client = s3()
        stat = client.stat_object(location.bucket, location.key)
        if stat.size is not None and stat.size > max_size:
            raise too_large(location, stat.size, max_size)
        _download(client, location, target, max_size)
    except ValueError as exc:  # the client's check of bucket and key names
        raise UsageError(f"input {location}: {exc}") from None
    except S3Error as exc:
        if exc.code in _MISSING:
            raise missing_input(location, exc.code) from None
        raise storage_error(f"downloading {location}", exc) from exc
    except _STORAGE_ERRORS as exc:
        raise storage_error(f"downloading {location}", exc) from exc
    return target


def missing_input(location: S3Object, code: str) -> InvalidInputError:
    return InvalidInputError(
        f"the input {location} does not exist (bucket {location.bucket!r}, "
        f"key {location.key!r}: {code})"
    )


def _download(client: Minio, location: S3Object, target: Path, max_size: int) -> None:
    # At most one byte past the limit is asked for (``save``).
    response = client.get_object(location.bucket, location.key, length=max_size + 1)
    save(response, location, target, max_size)


def save(response: BaseHTTPResponse, location: S3Object, target: Path, max_size: int) -> None:
    """The object's body into ``target``, never more than ``max_size`` bytes of it: at most
    one byte past the limit is read, so an object that grew since its stat (or a server that
    misstated its size) is refused without filling the disk. Closes ``response``."""
    try:
        written = 0
        with target.open("wb") as file:
            while chunk := response.read(min(_CHUNK, max_size + 1 - written)):
                written += len(chunk)
                if written > max_size:  # more than its stat said: refused all the same
                    raise InvalidInputError(
                        f"the input {location} is larger than the limit of "
                        f"{format_size(max_size)} ({max_size} bytes): more arrived than its "
                        "stated size"
                    )
                file.write(chunk)
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    finally:
        response.close()
        response.release_conn()


class _Pipe:
    """A bounded byte pipe between one writer thread and one reader thread (the upload)."""

    def __init__(self, limit: int) -> None:
        self._buffer = bytearray()
        self._limit = limit
        self._cond = threading.Condition()
        self._eof = False
        self._error: BaseException | None = None
        self._reader_gone = False

    # Writer side (zipfile only needs write and flush on a stream it cannot seek).
    def write(self, data: bytes) -> int:
        with self._cond:
            while len(self._buffer) >= self._limit and not self._reader_gone:
                self._cond.wait()
            if self._reader_gone:
                raise BrokenPipeError("the upload stopped")
            self._buffer += data
            self._cond.notify_all()
        return len(data)

    def flush(self) -> None:
        pass

    def close_writer(self) -> None:
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def fail(self, error: BaseException) -> None:
        """Make the reader raise ``error``: the upload aborts instead of completing."""
        with self._cond:
            self._error = error
            self._cond.notify_all()

    # Reader side.
    def read(self, size: int = -1) -> bytes:
        with self._cond:
            while not self._buffer and not self._eof and self._error is None:
                self._cond.wait()
            if self._error is not None:
                raise self._error
            size = len(self._buffer) if size < 0 else size
            chunk = bytes(self._buffer[:size])
            del self._buffer[:size]
            self._cond.notify_all()
            return chunk

    def reader_done(self) -> None:
        with self._cond:
            self._reader_gone = True
            self._cond.notify_all()


class _AbortedError(Exception):
    """Raised inside the upload to make it abort; the writer's own error is re-raised."""


@contextlib.contextmanager
def _s3_writer(target: S3Object, s3: ClientFactory) -> Iterator[BinaryIO]:
    try:
        client = s3()
    except ValueError as exc:
        raise UsageError(f"output {target}: {exc}") from None

    def upload(source: BinaryIO) -> None:
        # length=-1: the size is unknown, so the client runs a multipart upload and
        # aborts it on any exception (a single PUT when it all fits in one part).
        client.put_object(
            target.bucket,
            target.key,
            source,
            length=-1,
            part_size=PART_SIZE,
            content_type="application/zip",
            num_parallel_uploads=2,
        )

    with piped_upload(upload, lambda exc: _classify_upload(target, exc)) as out:
        yield out


@contextlib.contextmanager
def piped_upload(
    upload: Callable[[BinaryIO], None], classify: Callable[[BaseException], Exception]
) -> Iterator[BinaryIO]:
    """A stream whose bytes ``upload`` reads in a thread while the block writes them. The
    upload must abort when a read raises: that is how the writer's failure reaches it.
    ``classify`` turns the upload's own failure into the error the block's caller sees."""
    pipe = _Pipe(PIPE_LIMIT)
    upload_error: list[BaseException] = []

    def run() -> None:
        try:
            upload(cast(BinaryIO, pipe))
        except BaseException as exc:
            upload_error.append(exc)
        finally:
            pipe.reader_done()

    thread = threading.Thread(target=logs.carrying_job(run), name="s3-upload", daemon=True)
    thread.start()
    try:
        yield cast(BinaryIO, pipe)
    except BaseException as exc:
        pipe.fail(_AbortedError())
        thread.join()
        real = [e for e in upload_error if not isinstance(e, _AbortedError)]
        if real and isinstance(exc, BrokenPipeError):
            # The writer only saw the symptom; the upload's error is the cause.
            _raise_classified(real[0], classify)
        raise
    pipe.close_writer()
    thread.join()
    if upload_error:
        _raise_classified(upload_error[0], classify)


def _raise_classified(
    error: BaseException, classify: Callable[[BaseException], Exception]
) -> NoReturn:
    classified = classify(error)
    if classified is error:  # already the separator's own error
        raise error
    raise classified from error


def _classify_upload(target: S3Object, exc: BaseException) -> Exception:
    if isinstance(exc, ValueError):
        return UsageError(f"output {target}: {exc}")
    return storage_error(f"uploading {target}", exc)


@contextlib.contextmanager
def _local_writer(target: Path) -> Iterator[BinaryIO]:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(
            prefix=f".{target.name}.", suffix=".part", dir=target.parent
        )
    except OSError as exc:
        raise storage_error(f"writing {target}", exc) from exc
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, target)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise storage_error(f"writing {target}", exc) from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def open_output(
    location: Location, s3: ClientFactory
) -> contextlib.AbstractContextManager[BinaryIO]:
    """A writable stream for OUTPUT that becomes visible only if the block completes."""
    if isinstance(location, Path):
        return _local_writer(location)
    return _s3_writer(location, s3)


class Checked:
    """A writable stream that calls ``check`` before each write: what it raises (a batch
    member deleted, the process told to stop) aborts the output as any error does."""

    def __init__(self, out: BinaryIO, check: Callable[[], None]) -> None:
        self.out, self.check = out, check

    def write(self, data: bytes) -> int:
        self.check()
        return self.out.write(data)

    def flush(self) -> None:
        self.out.flush()


def delete_output(location: Location, s3: ClientFactory) -> None:
    """Remove a complete OUTPUT whose job is gone (nobody will fetch it, and the job's own
    clean-up may have run before it was written). Best effort: a failure is logged."""
    try:
        if isinstance(location, Path):
            location.unlink(missing_ok=True)
        else:
            s3().remove_object(location.bucket, location.key)
    except (*_STORAGE_ERRORS, ValueError) as exc:
        log.warning("could not remove %s: %s", location, exc)
        return
    log.info("removed %s: its job is gone", location)
