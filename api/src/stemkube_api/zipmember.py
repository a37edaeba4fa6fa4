"""One member of a ZIP in object storage, read without fetching the whole archive: zipfile
reads the central directory and the member through ranged GETs."""

import io
import zipfile
from collections.abc import Iterator

from stemkube_api.interfaces import ObjectStore

BLOCK = 1024 * 1024
CHUNK = 256 * 1024


class RangeFile(io.RawIOBase):
    """A read-only, seekable file over an object, one ranged GET per read."""

    def __init__(self, store: ObjectStore, key: str, size: int) -> None:
        super().__init__()
        self._store, self._key, self._size = store, key, size
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: "bytearray | memoryview") -> int:  # type: ignore[override]
        want = min(len(buffer), self._size - self._pos)
        if want <= 0:
            return 0
        reader = self._store.open(self._key, self._pos, want)
        got = 0
        view = memoryview(buffer)
        try:
            for chunk in reader:
                view[got : got + len(chunk)] = chunk
                got += len(chunk)
        finally:
            reader.close()
        self._pos += got
        return got


class NoSuchMemberError(LookupError):
    pass


def open_member(
    store: ObjectStore, key: str, size: int, member: str
) -> tuple[int, Iterator[bytes]]:
    """(uncompressed size, its bytes chunk by chunk); NoSuchMemberError if the ZIP lacks it."""
    raw = io.BufferedReader(RangeFile(store, key, size), buffer_size=BLOCK)
    archive = zipfile.ZipFile(raw)
    try:
        info = archive.getinfo(member)
    except KeyError:
        archive.close()
        raise NoSuchMemberError(member) from None

    def chunks() -> Iterator[bytes]:
        try:
            with archive.open(info) as handle:
                while chunk := handle.read(CHUNK):
                    yield chunk
        finally:
            archive.close()

    return info.file_size, chunks()
