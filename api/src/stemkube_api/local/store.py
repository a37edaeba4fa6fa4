"""The object store of local mode: each object is a file under ``<data-dir>/objects/<key>``.

A file is written under a hidden ``.part`` name in its final folder and renamed on commit, so
an object appears whole or not at all, as with S3 (the separator writes its result the same
way).
"""

import contextlib
import datetime
import hashlib
import os
import re
import secrets
import shutil
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from stemkube_api.interfaces import (
    ObjectInfo,
    ObjectNotFoundError,
    PartsError,
    TooLargeError,
    UnavailableError,
    UploadedPart,
)

READ_CHUNK = 1024 * 1024
PARTIAL_SUFFIX = ".part"
# Direct uploads' parts (``MultipartStore``): <root>/multipart/<upload id>/.<number>-<md5>,
# hidden names (what is begun and not finished, as a half-written object's).
MULTIPART_DIR = "multipart"
_PART_NAME = re.compile(r"\.([0-9]{5})-([0-9a-f]{32})")
SECRET_FILE = "upload-signing.key"


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


class PartFileWriter:
    """One part of a direct upload: a FileWriter whose file is named, on commit, by the
    part's number and the MD5 of its bytes (its ETag, as S3 answers a part's PUT), replacing
    an earlier upload of that part."""

    def __init__(self, folder: Path, number: int, limit: int) -> None:
        self.folder = folder
        self.number = number
        self.md5 = hashlib.md5(usedforsecurity=False)
        self.writer = FileWriter(folder / f".{number:05d}-incoming", limit)
        self.etag = ""

    def write(self, data: bytes) -> None:
        self.writer.write(data)
        self.md5.update(data)

    def commit(self) -> int:
        size = self.writer.commit()
        self.etag = self.md5.hexdigest()
        final = self.folder / f".{self.number:05d}-{self.etag}"
        for old in self.folder.glob(f".{self.number:05d}-*"):
            if old != self.writer.target and old != final:
                old.unlink(missing_ok=True)
        os.replace(self.writer.target, final)
        return size

    def abort(self) -> None:
        self.writer.abort()


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

    # Direct uploads (MultipartStore): the client PUTs the parts to the API itself.

    def _multipart(self, upload_id: str) -> Path:
        if not re.fullmatch(r"[0-9a-f]{32}", upload_id):
            raise ObjectNotFoundError(upload_id)
        return self.root / MULTIPART_DIR / upload_id

    def begin_multipart(self, key: str, content_type: str) -> str:
        upload_id = uuid.uuid4().hex
        try:
            self._multipart(upload_id).mkdir(parents=True)
        except OSError as exc:
            raise UnavailableError(f"cannot write under {self.root}: {exc}") from exc
        return upload_id

    def part_url(
        self, key: str, upload_id: str, number: int, expires: datetime.timedelta
    ) -> str | None:
        return None  # the API takes the parts: PUT /uploads/{id}/parts/{n}

    def part_writer(self, upload_id: str, number: int, limit: int) -> PartFileWriter:
        folder = self._multipart(upload_id)
        if not folder.is_dir():
            raise ObjectNotFoundError(upload_id)
        try:
            return PartFileWriter(folder, number, limit)
        except OSError as exc:
            raise UnavailableError(f"cannot write under {self.root}: {exc}") from exc

    def complete_multipart(self, key: str, upload_id: str, parts: Sequence[UploadedPart]) -> None:
        """The parts, concatenated in order, become the object (written as any object is)."""
        folder = self._multipart(upload_id)
        if not folder.is_dir():
            raise ObjectNotFoundError(key)
        stored = {}
        for path in folder.iterdir():
            found = _PART_NAME.fullmatch(path.name)
            if found:
                stored[int(found[1])] = (found[2], path)
        numbers = [p.number for p in parts]
        if not parts or numbers != sorted(set(numbers)):
            raise PartsError("list the parts once each, in ascending order")
        for part in parts:
            etag = part.etag.strip('"').lower()
            if part.number not in stored or stored[part.number][0] != etag:
                raise PartsError(f"part {part.number} was not uploaded with ETag {part.etag}")
        writer = self.writer(key, 1 << 62, "application/octet-stream")
        try:
            for part in parts:
                with stored[part.number][1].open("rb") as file:
                    while chunk := file.read(READ_CHUNK):
                        writer.write(chunk)
        except OSError as exc:
            writer.abort()
            raise UnavailableError(f"cannot store {key}: {exc}") from exc
        except BaseException:
            writer.abort()
            raise
        writer.commit()
        shutil.rmtree(folder, ignore_errors=True)

    def abort_multipart(self, key: str, upload_id: str) -> None:
        with contextlib.suppress(ObjectNotFoundError):
            shutil.rmtree(self._multipart(upload_id), ignore_errors=True)

    def stale_multiparts(
        self, prefixes: tuple[str, ...], begun_before: datetime.datetime
    ) -> list[tuple[str, str]]:
        """None: a local direct upload's parts live and go with its record (the sweep), and
        a file half-written by a killed process is removed at start (``remove_partials``)."""
        return []

    def keys(self, prefix: str) -> list[str]:
        """The (whole) objects' keys under ``prefix``."""
        base = self.root / prefix.rstrip("/") if prefix.rstrip("/") else self.root
        if not base.is_dir():
            return []
        return sorted(
            p.relative_to(self.root).as_posix()
            for p in base.rglob("*")
            if p.is_file() and not p.name.startswith(".")
        )

    def signing_secret(self) -> bytes:
        """The key of the part URLs' tokens: the data folder's own (made once, mode 0600), so
        that URLs outlive a restart."""
        path = self.root.parent / SECRET_FILE
        try:
            secret = path.read_bytes()
        except FileNotFoundError:
            secret = b""
        if len(secret) < 32:
            self.root.parent.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(dir=self.root.parent, prefix=f".{SECRET_FILE}.")
            with os.fdopen(fd, "wb") as file:
                file.write(secrets.token_bytes(32))
            try:
                os.link(name, path)  # the first writer wins; others read its secret
            except FileExistsError:
                pass
            finally:
                os.unlink(name)
            secret = path.read_bytes()
        return secret

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
