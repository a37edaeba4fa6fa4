"""Every input format and channel layout a user can upload, and every output format, through
the whole ``stemkube-separate`` program (its own process) to a ZIP whose members are checked
with the ffmpeg tools, not with the separator's own code."""

from pathlib import Path

import pytest

from tests.harness.separator_fixtures import (
    MP3_FRAME,
    SAMPLE_RATE,
    log_lines,
    make_audio,
    probe,
    run_separator,
    zip_members,
)

pytestmark = pytest.mark.integration

FOUR = ["bass.mp3", "drums.mp3", "other.mp3", "vocals.mp3"]

# name -> (file name, ffmpeg codec arguments, sample rate, channels)
INPUTS: dict[str, tuple[str, tuple[str, ...], int, int]] = {
    "mp3-stereo-44k": ("in.mp3", ("-c:a", "libmp3lame", "-b:a", "192k"), 44100, 2),
    "mp3-mono-22k": ("in.mp3", ("-c:a", "libmp3lame", "-b:a", "64k"), 22050, 1),
    "wav-u8": ("in.wav", ("-c:a", "pcm_u8"), 8000, 2),
    "wav-s16-mono": ("in.wav", ("-c:a", "pcm_s16le"), 44100, 1),
    "wav-s24-96k": ("in.wav", ("-c:a", "pcm_s24le"), 96000, 2),
    "wav-s32": ("in.wav", ("-c:a", "pcm_s32le"), 48000, 2),
    "wav-f32": ("in.wav", ("-c:a", "pcm_f32le"), 44100, 2),
    "wav-f64-5.1": ("in.wav", ("-c:a", "pcm_f64le"), 48000, 6),
    "flac-24-5.1": ("in.flac", ("-c:a", "flac", "-sample_fmt", "s32"), 96000, 6),
    "ogg-vorbis": ("in.ogg", ("-c:a", "libvorbis", "-q:a", "4"), 44100, 2),
    "opus": ("in.opus", ("-c:a", "libopus", "-b:a", "96k"), 48000, 2),
    "opus-quad": ("in.opus", ("-c:a", "libopus", "-b:a", "128k", "-mapping_family", "1"), 48000, 4),
    "m4a-aac": ("in.m4a", ("-c:a", "aac", "-b:a", "128k"), 44100, 2),
    "m4a-alac-mono": ("in.m4a", ("-c:a", "alac"), 32000, 1),
    "mkv-pcm-7.1": ("in.mkv", ("-c:a", "pcm_s16le"), 48000, 8),
}


def assert_stems(
    zip_path: Path, tmp_path: Path, names: list[str], seconds: float
) -> dict[str, Path]:
    members = zip_members(zip_path, tmp_path / "unzipped")
    assert sorted(members) == sorted(names)
    for name, path in members.items():
        got = probe(path)
        assert got.sample_rate == SAMPLE_RATE, name
        assert got.channels == 2, name
        assert abs(got.samples - seconds * SAMPLE_RATE) <= MP3_FRAME, (name, got, seconds)
    return members


@pytest.mark.parametrize("case", list(INPUTS))
def test_input_format_to_mp3_stems(case: str, tiny_model_repo: Path, tmp_path: Path) -> None:
    filename, codec_args, rate, channels = INPUTS[case]
    song = make_audio(tmp_path / filename, *codec_args, rate=rate, channels=channels)
    source = probe(song)
    assert source.channels == channels  # the generator made what the case says
    out = tmp_path / "out" / "stems.zip"

    result = run_separator(song, out, "--model-repo", tiny_model_repo, "--shifts", "0")

    assert result.returncode == 0, result.stderr
    members = assert_stems(out, tmp_path, FOUR, source.seconds)
    for path in members.values():
        assert probe(path).codec == "mp3"
        assert probe(path).bit_rate == 320_000
    assert not list(out.parent.glob(".*")), "a temporary file was left beside the output"


@pytest.mark.parametrize(
    ("fmt", "depth", "codec"),
    [
        ("wav", "16", "pcm_s16le"),
        ("wav", "24", "pcm_s24le"),
        ("wav", "32f", "pcm_f32le"),
        ("flac", "16", "flac"),
        ("flac", "24", "flac"),
    ],
)
def test_output_formats(
    fmt: str, depth: str, codec: str, tiny_model_repo: Path, tmp_path: Path
) -> None:
    song = make_audio(tmp_path / "in.wav", "-c:a", "pcm_s16le")
    out = tmp_path / "stems.zip"

    result = run_separator(
        song, out, "--model-repo", tiny_model_repo, "--format", fmt, "--wav-depth", depth,
        "--shifts", "0",
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    names = [f"{s}.{fmt}" for s in ("bass", "drums", "other", "vocals")]
    members = assert_stems(out, tmp_path, names, 1.5)
    for path in members.values():
        assert probe(path).codec == codec


def test_two_stems_six_stem_model_and_progress_log(tiny_model_repo: Path, tmp_path: Path) -> None:
    song = make_audio(tmp_path / "in.flac", "-c:a", "flac", seconds=3.0)
    two, six = tmp_path / "two.zip", tmp_path / "six.zip"

    r_two = run_separator(
        song, two, "--model-repo", tiny_model_repo, "--two-stems", "vocals", "--bitrate", "128"
    )
    r_six = run_separator(
        song, six, "--model-repo", tiny_model_repo, "--model", "htdemucs_6s", "--shifts", "0",
        "--stems", "guitar,piano,vocals", "--job-id", "job-6s",
    )  # fmt: skip

    assert r_two.returncode == 0, r_two.stderr
    for path in assert_stems(two, tmp_path / "a", ["vocals.mp3", "no_vocals.mp3"], 3.0).values():
        assert probe(path).bit_rate == 128_000
    assert r_six.returncode == 0, r_six.stderr
    assert_stems(six, tmp_path / "b", ["guitar.mp3", "piano.mp3", "vocals.mp3"], 3.0)

    logs = log_lines(r_six.stderr)
    assert all({"ts", "level", "msg"} <= set(line) for line in logs)
    assert all(line.get("job") == "job-6s" for line in logs)
    progress = [int(str(line["progress"])) for line in logs if "progress" in line]
    assert progress == sorted(progress)
    assert progress[0] == 0
    assert progress[-1] == 100  # values between depend on speed: logged at most once a second


@pytest.mark.parametrize("fmt", ["mp3", "flac"])
def test_long_song_in_chunks(fmt: str, tiny_model_repo: Path, tmp_path: Path) -> None:
    # Chunks of 3 x 3.9 s (the tiny model's segment) make a 20 s song three chunks, which
    # the stem encoders receive one after the other.
    song = make_audio(tmp_path / "in.ogg", "-c:a", "libvorbis", seconds=20.0, rate=48000)
    out = tmp_path / "stems.zip"

    result = run_separator(
        song, out, "--model-repo", tiny_model_repo, "--format", fmt, "--shifts", "0",
        "--two-stems", "drums", env={"STEMKUBE_CHUNK_SECONDS": "1"},
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    assert_stems(out, tmp_path, [f"drums.{fmt}", f"no_drums.{fmt}"], probe(song).seconds)
