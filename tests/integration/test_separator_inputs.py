"""Issue 19, "inputs are what they claim to be", with real files and the real MinIO: a song cut
short, damaged in the middle or with a lying header is refused by the decode (files made by
the ffmpeg tool, decoded by the separator's own PyAV), and an input larger than MAX_FILE_SIZE
or missing from storage is bad input, refused before anything fills the disk."""

import io
import random
import struct
from pathlib import Path

import pytest

from stemkube_separator import decode, exitcodes, storage
from stemkube_separator.errors import InvalidInputError
from stemkube_separator.locations import S3Object
from tests.harness.minio import MinioServer
from tests.harness.separator_fixtures import make_audio, run_separator

pytestmark = pytest.mark.integration

RATE = 44100
# Formats whose header states the length: a Xing MP3 (ffmpeg writes one), FLAC, M4A whose
# index comes first (what a phone or iTunes writes), Ogg.
COUNTED = {
    "mp3": ("song.mp3", ("-c:a", "libmp3lame")),
    "flac": ("song.flac", ("-c:a", "flac")),
    "m4a": ("song.m4a", ("-c:a", "aac", "-movflags", "+faststart")),
}


def _song(tmp: Path, kind: str, seconds: float = 10.0) -> Path:
    name, args = COUNTED[kind]
    return make_audio(tmp / name, *args, seconds=seconds)


@pytest.mark.parametrize("kind", list(COUNTED))
@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9])
def test_a_cut_file_is_refused(kind: str, fraction: float, tmp_path: Path) -> None:
    song = _song(tmp_path, kind)
    data = song.read_bytes()
    cut = tmp_path / f"cut-{song.name}"
    cut.write_bytes(data[: int(len(data) * fraction)])

    with pytest.raises(InvalidInputError, match="damaged or truncated: its header declares"):
        decode.decode(cut, RATE, 3600)


@pytest.mark.parametrize("fill", ["zeros", "noise"])
@pytest.mark.parametrize("kind", ["mp3", "flac", "m4a", "ogg"])
def test_a_damaged_middle_is_refused(kind: str, fill: str, tmp_path: Path) -> None:
    if kind == "ogg":
        song = make_audio(tmp_path / "song.ogg", "-c:a", "libvorbis", seconds=10.0)
    else:
        song = _song(tmp_path, kind)
    data = bytearray(song.read_bytes())
    start, end = len(data) * 4 // 10, len(data) * 6 // 10
    junk = bytes(end - start) if fill == "zeros" else random.Random(1).randbytes(end - start)
    data[start:end] = junk
    broken = tmp_path / f"broken-{song.name}"
    broken.write_bytes(bytes(data))

    with pytest.raises(InvalidInputError, match="the input is damaged"):
        decode.decode(broken, RATE, 3600)


def _flac_with_total_samples(tmp: Path, factor: float) -> Path:
    song = _song(tmp, "flac", seconds=5.0)
    data = bytearray(song.read_bytes())
    # STREAMINFO follows "fLaC" and its 4-byte block header; bytes 10..17 of it end with the
    # 36-bit count of samples.
    field = int.from_bytes(data[18:26], "big")
    total = field & ((1 << 36) - 1)
    field = (field & ~((1 << 36) - 1)) | int(total * factor)
    data[18:26] = field.to_bytes(8, "big")
    liar = tmp / f"liar-{factor}.flac"
    liar.write_bytes(bytes(data))
    return liar


def test_a_header_claiming_more_than_the_file_holds_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError) as caught:
        decode.decode(_flac_with_total_samples(tmp_path, 2.0), RATE, 3600)
    assert str(caught.value) == (
        "the input is damaged or truncated: its header declares 10.00 s of audio but only "
        "5.00 s could be decoded"
    )


def test_a_header_claiming_less_than_the_file_holds_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError) as caught:
        decode.decode(_flac_with_total_samples(tmp_path, 0.5), RATE, 3600)
    assert str(caught.value) == (
        "the input's header is wrong: it declares 2.50 s of audio but 5.00 s were decoded"
    )


@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("cbr.mp3", ("-c:a", "libmp3lame", "-b:a", "128k")),
        ("vbr.mp3", ("-c:a", "libmp3lame", "-q:a", "2")),
        # Without a Xing header FFmpeg only estimates the length from the bit rate.
        ("vbr-no-xing.mp3", ("-c:a", "libmp3lame", "-q:a", "2", "-write_xing", "0")),
        ("s16.wav", ("-c:a", "pcm_s16le")),
        ("song.flac", ("-c:a", "flac")),
        ("song.ogg", ("-c:a", "libvorbis")),
        ("song.opus", ("-c:a", "libopus")),
        ("song.m4a", ("-c:a", "aac")),
        ("raw.aac", ("-c:a", "aac", "-f", "adts")),
    ],
)
def test_complete_files_pass(name: str, args: tuple[str, ...], tmp_path: Path) -> None:
    song = make_audio(tmp_path / name, *args, seconds=5.0)
    audio, _ = decode.decode(song, RATE, 3600)
    assert abs(audio.shape[1] / RATE - 5.0) < 0.1


def test_a_wav_whose_data_size_says_less_is_what_it_says(tmp_path: Path) -> None:
    # FFmpeg reads a WAV's data chunk as its size says: the header is what is decoded, so
    # there is nothing to refuse (the bytes past it are not audio to FFmpeg either).
    song = make_audio(tmp_path / "song.wav", "-c:a", "pcm_s16le", seconds=4.0)
    data = bytearray(song.read_bytes())
    at = data.find(b"data")
    size = struct.unpack("<I", data[at + 4 : at + 8])[0]
    data[at + 4 : at + 8] = struct.pack("<I", size // 2)
    song.write_bytes(bytes(data))
    audio, _ = decode.decode(song, RATE, 3600)
    assert abs(audio.shape[1] / RATE - 2.0) < 0.01


# --- storage ---------------------------------------------------------------------------------


def _s3_env(server: MinioServer) -> dict[str, str]:
    return {
        "AWS_ENDPOINT_URL": server.url,
        "AWS_ACCESS_KEY_ID": server.access_key,
        "AWS_SECRET_ACCESS_KEY": server.secret_key,
        "AWS_REGION": "us-east-1",
    }


def test_an_object_over_the_limit_is_refused_before_it_is_downloaded(
    minio_server: MinioServer, bucket: str, tiny_model_repo: Path, tmp_path: Path
) -> None:
    song = make_audio(tmp_path / "song.wav", "-c:a", "pcm_s16le", seconds=2.0)
    size = song.stat().st_size
    minio_server.client().fput_object(bucket, "inputs/big/song.wav", str(song))
    term = tmp_path / "term"

    result = run_separator(
        f"s3://{bucket}/inputs/big/song.wav", tmp_path / "o.zip",
        "--model-repo", tiny_model_repo, "--termination-log", term,
        env={**_s3_env(minio_server), "MAX_FILE_SIZE": "100KB"},
    )  # fmt: skip

    assert result.returncode == exitcodes.INVALID_INPUT, result.stderr
    message = term.read_text()
    assert f"({size} bytes); the limit is 100KB ({100 * 1024} bytes)" in message
    assert f"s3://{bucket}/inputs/big/song.wav" in message
    assert not (tmp_path / "o.zip").exists()


def test_the_limit_holds_while_streaming(
    minio_server: MinioServer, bucket: str, tmp_path: Path
) -> None:
    # An object larger than its stat said (it grew, or the server lied): the download itself
    # stops one byte past the limit and leaves nothing behind.
    from stemkube_separator import s3

    minio_server.client().put_object(
        bucket, "inputs/grows/song.bin", io.BytesIO(b"x" * 300_000), 300_000
    )
    client = s3.client(s3.S3Settings.from_env(_s3_env(minio_server)))
    target = tmp_path / "input"
    with pytest.raises(InvalidInputError, match=r"larger than the limit of 97\.66KB"):
        storage._download(client, S3Object(bucket, "inputs/grows/song.bin"), target, 100_000)
    assert not target.exists()


def test_an_object_within_the_limit_is_fetched(
    minio_server: MinioServer, bucket: str, tmp_path: Path
) -> None:
    from stemkube_separator import s3

    payload = random.Random(2).randbytes(3 << 20)
    minio_server.client().put_object(
        bucket, "inputs/ok/song.bin", io.BytesIO(payload), len(payload)
    )
    factory = lambda: s3.client(s3.S3Settings.from_env(_s3_env(minio_server)))  # noqa: E731
    local = storage.fetch_input(
        S3Object(bucket, "inputs/ok/song.bin"), tmp_path, factory, len(payload)
    )
    assert local.read_bytes() == payload
