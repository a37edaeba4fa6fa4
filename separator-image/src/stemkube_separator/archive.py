"""The result ZIP: one member per stem, ``<stem>.<ext>``."""

import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

CHUNK = 1 << 20


def member_name(stem: str, ext: str) -> str:
    return f"{stem}.{ext}"


def write_zip(members: Sequence[tuple[str, Path]], out: BinaryIO) -> None:
    """Write the files as STORED members: MP3 and FLAC are already compressed, and deflating
    WAV would cost more CPU time than the upload it saves. ``out`` need not be seekable."""
    with zipfile.ZipFile(out, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, path in sorted(members):
            info = zipfile.ZipInfo.from_file(path, arcname=name)
            info.compress_type = zipfile.ZIP_STORED
            with path.open("rb") as src, zf.open(info, mode="w") as dst:
                while chunk := src.read(CHUNK):
                    dst.write(chunk)
