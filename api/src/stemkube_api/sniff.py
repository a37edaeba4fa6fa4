"""What kind of file an upload is, from its first bytes (magic numbers), before any job exists.

The answer also names the extension of the stored input: object keys are built from the job id
and this fixed allow-list, never from the user's file name.
"""

from dataclasses import dataclass

from stemkube_contract.formats import AUDIO_EXTENSIONS

SNIFF_BYTES = 512  # enough for every signature below


@dataclass(frozen=True)
class Detected:
    format: str  # for people: "MP3", "WAV", ...
    extension: str  # from EXTENSIONS


class NotAudioError(ValueError):
    """The upload is not audio this service reads; the message says what it looks like."""


# Every extension a detected format is stored under: the contract's list, which the client
# also picks a folder's songs by.
EXTENSIONS = AUDIO_EXTENSIONS

ACCEPTED = "MP3, WAV, FLAC, OGG/Opus, M4A/AAC, AIFF, WebM/Matroska, CAF, WMA"

# Things people upload by mistake, to say what the file looks like.
_NOT_AUDIO: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF87a", "a GIF image"),
    (b"GIF89a", "a GIF image"),
    (b"%PDF", "a PDF document"),
    (b"PK\x03\x04", "a ZIP archive"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (b"Rar!", "a RAR archive"),
    (b"\x7fELF", "an executable"),
    (b"MZ", "an executable"),
    (b"MThd", "a MIDI file (notes, not sound)"),
)

_ASF = bytes.fromhex("3026b2758e66cf11a6d900aa0062ce6c")


def _mpeg_frame(head: bytes) -> Detected | None:
    """An MPEG audio frame header (MP3/MP2 without ID3) or an ADTS AAC header."""
    if len(head) < 4 or head[0] != 0xFF or head[1] & 0xE0 != 0xE0:
        return None
    version = (head[1] >> 3) & 0x03
    layer = (head[1] >> 1) & 0x03
    if layer == 0:
        # ADTS: 12 sync bits, MPEG-4/2 id, layer 00, a valid sampling frequency index.
        if head[1] & 0xF6 == 0xF0 and (head[2] >> 2) & 0x0F < 13:
            return Detected("AAC (ADTS)", "aac")
        return None
    bitrate_index = head[2] >> 4
    rate_index = (head[2] >> 2) & 0x03
    if version == 1 or bitrate_index == 0x0F or rate_index == 0x03:
        return None
    return Detected("MP3", "mp3") if layer == 1 else Detected("MP2", "mp2")


def _mp4_extension(brand: bytes) -> str:
    if brand[:3] in (b"M4A", b"M4B", b"M4P", b"F4A"):
        return "m4a"
    if brand == b"qt  ":
        return "mov"
    if brand[:3] in (b"3gp", b"3g2"):
        return "3gp"
    return "mp4"


def _ogg(head: bytes) -> Detected:
    if b"OpusHead" in head[:64]:
        return Detected("Opus", "opus")
    if b"\x7fFLAC" in head[:64]:
        return Detected("FLAC in Ogg", "oga")
    return Detected("Ogg Vorbis", "ogg")


def _looks_like_text(head: bytes) -> bool:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        # The head may cut a multi-byte character in two.
        try:
            text = head[:-3].decode("utf-8")
        except UnicodeDecodeError:
            return False
    return all(c.isprintable() or c in "\r\n\t\f" for c in text)


def sniff(head: bytes) -> Detected:
    """The audio format of a file that starts with ``head`` (its first SNIFF_BYTES bytes or all
    of it), or NotAudioError saying why not."""
    if not head:
        raise NotAudioError("the file is empty")
    if head.startswith(b"ID3"):
        return Detected("MP3", "mp3")
    if head[:4] in (b"RIFF", b"RF64", b"BW64") and head[8:12] == b"WAVE":
        return Detected("WAV", "wav")
    if head.startswith(b"fLaC"):
        return Detected("FLAC", "flac")
    if head.startswith(b"OggS"):
        return _ogg(head)
    if head[4:8] == b"ftyp":
        return Detected("MP4/M4A", _mp4_extension(head[8:12]))
    if head.startswith(b"FORM") and head[8:12] in (b"AIFF", b"AIFC"):
        return Detected("AIFF", "aiff")
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return Detected("WebM", "webm") if b"webm" in head[:64] else Detected("Matroska", "mka")
    if head.startswith(b"caff"):
        return Detected("CAF", "caf")
    if head.startswith(_ASF):
        return Detected("WMA/ASF", "wma")
    if head.startswith(b"#!AMR"):
        return Detected("AMR", "amr")
    if head.startswith(b"MAC "):
        return Detected("Monkey's Audio", "ape")
    if head.startswith(b"wvpk"):
        return Detected("WavPack", "wv")
    if head.startswith(b".snd"):
        return Detected("Sun AU", "au")
    frame = _mpeg_frame(head)
    if frame is not None:
        return frame
    for magic, what in _NOT_AUDIO:
        if head.startswith(magic):
            raise NotAudioError(f"it looks like {what}")
    if head[:4] == b"RIFF":
        raise NotAudioError(f"it is a RIFF file of type {head[8:12]!r}, not WAVE")
    if _looks_like_text(head):
        raise NotAudioError("it looks like text")
    raise NotAudioError(f"its first bytes ({head[:8].hex()}) match no audio format")
