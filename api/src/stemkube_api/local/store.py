"""The object store of local mode: each object is a file under ``<data-dir>/objects/<key>``.

A file is written under a hidden ``.part`` name in its final folder and renamed on commit, so
an object appears whole or not at all, as with S3 (the separator writes its result the same
way).
"""

import contextlib
import datetime
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from stemkube_api.interfaces import ObjectInfo, ObjectNotFoundError, TooLargeError, UnavailableError

READ_CHUNK = 1024 * 1024
PARTIAL_SUFFIX = ".part"


def key_path(root: Path, key: str) -> Path:
    """The file of ``key``. Keys come from job ids, never from user text; this refuses anything
    that could leave the root all the same."""
    parts = PurePosixPath(key).parts
    if not parts or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"not an object key: {key!r}")
    return root.joinpath(*parts)


class FileWriter:
    def __init__(self, target: Path, limit: int) -> None:
        self.target = target
        self.limit = limit
        self.size = 0
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(
            prefix=f".{target.name}.", suffix=PARTIAL_SUFFIX, dir=target.parent
        )
        self.tmp = Path(name)
        self.file: BinaryIO | None = os.fdopen(fd, "wb")

    def write(self, data: bytes) -> None:
        assert self.file is not None, "write after commit or abort"
        self.size += len(data)
        if self.size > self.limit:
            self.abort()
            raise TooLargeError(self.limit)
        self.file.write(data)

    def commit(self) -> int:
        assert self.file is not None, "commit after commit or abort"
        file, self.file = self.file, None
        try:
            file.flush()
            os.fsync(file.fileno())
            file.close()
            os.replace(self.tmp, self.target)
        except OSError as exc:
            self.tmp.unlink(missing_ok=True)
            raise UnavailableError(f"cannot store {self.target.name}: {exc}") from exc
        return self.size

    def abort(self) -> None:
        if self.file is not None:
            with contextlib.suppress(OSError):
                self.file.close()
            self.file = None
        self.tmp.unlink(missing_ok=True)


class FileReader:
    def __init__(self, path: Path, offset: int, length: int | None) -> None:
        self.file = path.open("rb")
        total = os.fstat(self.file.fileno()).st_size
        offset = min(max(0, offset), total)
        self.size = total - offset if length is None else max(0, min(length, total - offset))
        self.file.seek(offset)

    def __iter__(self) -> Iterator[bytes]:
        left = self.size
        try:
            while left > 0:
                chunk = self.file.read(min(READ_CHUNK, left))
                if not chunk:
                    break
                left -= len(chunk)
                yield chunk
        finally:
            self.close()

    def close(self) -> None:
        self.file.close()


class LocalStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, key: str) -> Path:
        return key_path(self.root, key)

    def writer(self, key: str, limit: int, content_type: str) -> FileWriter:
        try:
            return FileWriter(self.path(key), limit)
        except OSError as exc:
            raise UnavailableError(f"cannot write under {self.root}: {exc}") from exc

    def open(self, key: str, offset: int = 0, length: int | None = None) -> FileReader:
        try:
            return FileReader(self.path(key), offset, length)
        except FileNotFoundError:
            raise ObjectNotFoundError(key) from None
        except OSError as exc:
            raise UnavailableError(f"cannot read {key}: {exc}") from exc

    def stat(self, key: str) -> ObjectInfo | None:
        try:
            return ObjectInfo(key, self.path(key).stat().st_size)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise UnavailableError(f"cannot read {key}: {exc}") from exc

    def presigned_url(self, key: str, expires: datetime.timedelta, disposition: str) -> str | None:
        return None  # local files have no URL of their own: the API streams them

    def delete(self, key: str) -> None:
        path = self.path(key)
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise UnavailableError(f"cannot delete {key}: {exc}") from exc
        # inputs/<job-id>/ goes with its file; the top folders stay.
        parent = path.parent
        while parent != self.root and parent.parent != self.root:
            with contextlib.suppress(OSError):
                parent.rmdir()
            parent = parent.parent

    def check(self) -> None:
        if not self.root.is_dir() or not os.access(self.root, os.W_OK | os.X_OK):
            raise UnavailableError(f"storage: {self.root} is not a writable folder")

    def remove_partials(self) -> int:
        """Half-written files of a previous run (the process was killed mid-write). Only at
        start, when nothing writes."""
        removed = 0
        for path in self.root.rglob(f".*{PARTIAL_SUFFIX}"):
            with contextlib.suppress(OSError):
                path.unlink()
                removed += 1
        return removed
