"""Failures: each bad input gives exit code 3 and a one-line reason, storage trouble gives 75,
and the reason reaches the termination log (never blocking on an unwritable one)."""

import json
import random
import signal
import subprocess
from pathlib import Path

import pytest

from stemkube_separator import exitcodes
from tests.harness import procs
from tests.harness.separator_fixtures import (
    SEPARATE,
    ffmpeg,
    log_lines,
    make_audio,
    run_separator,
)

pytestmark = pytest.mark.integration


def termination_message(path: Path) -> str:
    text = path.read_text()
    assert text.endswith("\n")
    assert text.count("\n") == 1, f"not one line: {text!r}"
    return text.strip()


def _empty(tmp: Path) -> Path:
    path = tmp / "empty.mp3"
    path.write_bytes(b"")
    return path


def _text(tmp: Path) -> Path:
    path = tmp / "notes.mp3"
    path.write_text("these are my lyrics, not a song\n" * 20)
    return path


def _random_bytes(tmp: Path) -> Path:
    path = tmp / "noise.m4a"
    # Fixed bytes: FFmpeg's probe takes an unlucky draw of noise for a lyrics file (lrc).
    path.write_bytes(random.Random(0).randbytes(64 * 1024))
    return path


def _zero_duration(tmp: Path) -> Path:
    path = tmp / "zero.wav"
    ffmpeg("-f", "lavfi", "-i", "anullsrc=r=44100:cl=stereo", "-t", "0", "-c:a", "pcm_s16le", path)
    return path


def _truncated_header(tmp: Path) -> Path:
    song = make_audio(tmp / "whole.flac", "-c:a", "flac")
    path = tmp / "cut.flac"
    path.write_bytes(song.read_bytes()[:30])  # the stream header itself is cut
    return path


def _video_without_audio(tmp: Path) -> Path:
    path = tmp / "clip.mkv"
    ffmpeg("-f", "lavfi", "-i", "testsrc=d=1:s=64x64:r=5", "-c:v", "ffv1", path)
    return path


def _too_long_by_header(tmp: Path) -> Path:
    return make_audio(tmp / "long.wav", "-c:a", "pcm_s16le", seconds=4.0)


BAD_INPUTS = {
    "empty": (_empty, "empty"),
    "text": (_text, "not an audio file"),
    "random-bytes": (_random_bytes, "not an audio file"),
    "zero-duration": (_zero_duration, "zero duration"),
    "truncated-header": (_truncated_header, "not an audio file"),
    "no-audio-stream": (_video_without_audio, "no audio stream"),
    "too-long": (_too_long_by_header, "the limit is 0:02"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_invalid_input(case: str, tiny_model_repo: Path, tmp_path: Path) -> None:
    make, reason = BAD_INPUTS[case]
    song = make(tmp_path)
    term = tmp_path / "termination-log"
    out = tmp_path / "out.zip"

    result = run_separator(
        song, out, "--model-repo", tiny_model_repo,
        env={"STEMKUBE_TERMINATION_LOG": str(term), "STEMKUBE_MAX_DURATION": "2"},
    )  # fmt: skip

    assert result.returncode == exitcodes.INVALID_INPUT, result.stderr
    assert reason in termination_message(term)
    errors = [line for line in log_lines(result.stderr) if line["level"] == "error"]
    assert errors
    assert reason in str(errors[-1]["msg"])
    assert not out.exists()
    assert list(tmp_path.glob(".out.zip*")) == []


def test_too_long_when_decoded_even_if_header_says_otherwise(
    tiny_model_repo: Path, tmp_path: Path
) -> None:
    # A raw ADTS AAC stream declares no duration: only the decoded length can tell.
    song = make_audio(tmp_path / "long.aac", "-c:a", "aac", "-f", "adts", seconds=4.0)
    term = tmp_path / "term"

    result = run_separator(
        song, tmp_path / "o.zip", "--model-repo", tiny_model_repo, "--max-duration", "2",
        "--termination-log", term,
    )  # fmt: skip

    assert result.returncode == exitcodes.INVALID_INPUT, result.stderr
    assert "the limit is 0:02" in termination_message(term)


def test_truncated_file_is_invalid_input(tiny_model_repo: Path, tmp_path: Path) -> None:
    # Issue 19: an upload that stopped half way was once separated up to the cut, as if it
    # were the song.
    song = make_audio(tmp_path / "whole.mp3", "-c:a", "libmp3lame", seconds=3.0)
    cut = tmp_path / "cut.mp3"
    data = song.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    term = tmp_path / "term"

    result = run_separator(
        cut, tmp_path / "o.zip", "--model-repo", tiny_model_repo, "--termination-log", term
    )

    assert result.returncode == exitcodes.INVALID_INPUT, result.stderr
    assert "damaged or truncated: its header declares 3.00 s" in termination_message(term)
    assert not (tmp_path / "o.zip").exists()


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (("--two-stems", "kazoo"), "the model has no stem 'kazoo'"),
        (("--stems", "vocals,guitar"), "the model has no stem 'guitar'"),
        (("--segment", "60"), "longer than model allows"),
    ],
)
def test_impossible_request_is_invalid_input(
    args: tuple[str, ...], reason: str, tiny_model_repo: Path, tmp_path: Path
) -> None:
    song = make_audio(tmp_path / "in.wav", "-c:a", "pcm_s16le")
    term = tmp_path / "term"

    result = run_separator(
        song, tmp_path / "o.zip", "--model-repo", tiny_model_repo, "--termination-log", term,
        *args,
    )  # fmt: skip

    assert result.returncode == exitcodes.INVALID_INPUT, result.stderr
    assert reason in termination_message(term)


def test_a_model_missing_from_the_folder_has_its_own_exit_code(
    tiny_model_repo: Path, tmp_path: Path
) -> None:
    song = make_audio(tmp_path / "in.wav", "-c:a", "pcm_s16le")
    term = tmp_path / "term"

    result = run_separator(
        song, tmp_path / "o.zip", "--model-repo", tiny_model_repo, "--termination-log", term,
        "--model", "no_such_model",
    )  # fmt: skip

    assert result.returncode == exitcodes.MODEL_NOT_FOUND, result.stderr
    assert f"model 'no_such_model' is not in the model folder {tiny_model_repo}" in (
        termination_message(term)
    )


def test_missing_input_file_is_invalid_input(tiny_model_repo: Path, tmp_path: Path) -> None:
    term = tmp_path / "term"
    result = run_separator(
        tmp_path / "nothing.mp3", tmp_path / "o.zip", "--model-repo", tiny_model_repo,
        "--termination-log", term,
    )  # fmt: skip
    assert result.returncode == exitcodes.INVALID_INPUT, result.stderr
    assert "does not exist" in termination_message(term)


@pytest.mark.parametrize(
    "args",
    [
        ("only-one-argument",),
        ("in.mp3", "out.zip", "--format", "ogg"),
        ("in.mp3", "out.zip", "--stems", "vocals", "--two-stems", "vocals"),
        ("in.mp3", "out.zip", "--format", "flac", "--wav-depth", "32f"),
        ("in.mp3", "out.zip", "--bitrate", "333"),
        ("in.mp3", "out.zip", "--progress-cr", "no-slash"),
    ],
)
def test_usage_error(args: tuple[str, ...], tmp_path: Path) -> None:
    term = tmp_path / "term"
    result = run_separator(*args, "--termination-log", term)
    assert result.returncode == exitcodes.USAGE
    assert termination_message(term).startswith("usage error: ")


def test_unreachable_storage_is_transient(tiny_model_repo: Path, tmp_path: Path) -> None:
    term = tmp_path / "term"
    dead = f"http://127.0.0.1:{procs.free_port()}"  # nothing listens there

    result = run_separator(
        "s3://inputs/job/song.mp3", "s3://results/job.zip", "--model-repo", tiny_model_repo,
        "--termination-log", term,
        env={"AWS_ENDPOINT_URL": dead, "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"},
    )  # fmt: skip

    assert result.returncode == exitcodes.TRANSIENT, result.stderr
    message = termination_message(term)
    assert "downloading s3://inputs/job/song.mp3" in message
    assert "storage unreachable" in message


def test_unwritable_termination_log_does_not_change_the_outcome(
    tiny_model_repo: Path, tmp_path: Path
) -> None:
    result = run_separator(
        tmp_path / "nothing.mp3", tmp_path / "o.zip", "--model-repo", tiny_model_repo,
        "--termination-log", tmp_path / "no" / "such" / "dir" / "log",
    )  # fmt: skip
    assert result.returncode == exitcodes.INVALID_INPUT
    assert "does not exist" in result.stderr


def test_sigterm_stops_cleanly_and_leaves_no_output(tiny_model_repo: Path, tmp_path: Path) -> None:
    song = make_audio(tmp_path / "in.wav", "-c:a", "pcm_s16le", seconds=60.0)
    out, term = tmp_path / "out.zip", tmp_path / "term"
    proc = subprocess.Popen(
        [str(SEPARATE), str(song), str(out), "--model-repo", str(tiny_model_repo),
         "--termination-log", str(term)],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stderr is not None
    for line in proc.stderr:  # wait until the model is at work
        if json.loads(line).get("msg", "").startswith("decoded"):
            break
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=120)

    assert proc.returncode == 128 + signal.SIGTERM
    assert "terminated" in termination_message(term)
    assert not out.exists()
    assert list(tmp_path.glob(".out.zip*")) == []
