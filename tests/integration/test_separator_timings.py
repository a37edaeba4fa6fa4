"""Where the program's time goes: every second of its wall time, timed from outside, belongs to
a named stage of its last log line; and long songs in chunks with MP3 stems in pieces."""

import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from stemkube_separator import exitcodes, stages
from tests.harness.minio import MinioServer
from tests.harness.separator_fixtures import (
    SAMPLE_RATE,
    audio_tool,
    log_lines,
    make_audio,
    probe,
    run_separator,
    zip_members,
)

pytestmark = pytest.mark.integration


Logs = list[dict[str, Any]]


def timed_run(*args: str | Path, env: dict[str, str] | None = None) -> tuple[float, Logs]:
    """The program's wall time as its parent sees it (start to exit) and its log lines."""
    started = time.perf_counter()
    result = run_separator(*args, env=env)
    wall = time.perf_counter() - started
    assert result.returncode == exitcodes.OK, result.stderr
    return wall, log_lines(result.stderr)


def assert_stages_add_up(wall: float, logs: Logs) -> dict[str, float]:
    last = logs[-1]
    timings = {str(k): float(v) for k, v in last["timings"].items()}
    assert list(timings) == list(stages.ORDER)  # every stage, in run order
    assert all(seconds >= 0 for seconds in timings.values())
    assert sum(timings.values()) == pytest.approx(float(last["wall"]), abs=0.01)  # rounding
    assert abs(sum(timings.values()) - wall) <= outside_the_stages(wall), (wall, timings)
    return timings


def outside_the_stages(wall: float) -> float:
    """What of a run's ``wall`` time may fall outside its stages: starting the process (fork,
    exec) until its clock's origin, which is the kernel's start time of the process (10 ms
    ticks), and flushing the last line. On the 2-core machine under the whole suite's load
    that reached 0.18 s (a stage left out would be seconds: importing torch alone is 2.5)."""
    return max(0.3, 0.03 * wall)


def test_stages_add_up_to_the_wall(
    minio_server: MinioServer, bucket: str, tiny_model_repo: Path, tmp_path: Path
) -> None:
    song = make_audio(tmp_path / "song.ogg", "-c:a", "libvorbis", seconds=6.0)
    minio_server.client().fput_object(bucket, "inputs/t/song.ogg", str(song))
    env = {
        "AWS_ENDPOINT_URL": minio_server.url,
        "AWS_ACCESS_KEY_ID": minio_server.access_key,
        "AWS_SECRET_ACCESS_KEY": minio_server.secret_key,
        "AWS_REGION": "us-east-1",
    }

    wall, logs = timed_run(
        f"s3://{bucket}/inputs/t/song.ogg", f"s3://{bucket}/results/t.zip",
        "--model-repo", tiny_model_repo, "--job-id", "t", env=env,
    )  # fmt: skip

    timings = assert_stages_add_up(wall, logs)
    assert timings["import"] > 0.2  # torch alone takes longer than that to import
    assert timings["encode_tail"] > 0  # the song is one chunk: all its encoding comes last
    ready = next(line for line in logs if "precision" in line)
    assert (ready["device"], ready["precision"]) == ("cpu", "fp32")


def test_long_song_with_mp3_stems_in_pieces(tiny_model_repo: Path, tmp_path: Path) -> None:
    # 45 s in 12 s chunks, each stem in up to 3 pieces of at least 20 s: the pieces cross
    # the chunks, and are encoded between them (a CPU takes turns).
    song = make_audio(tmp_path / "in.wav", "-c:a", "pcm_s16le", seconds=45.0)
    out = tmp_path / "stems.zip"

    wall, logs = timed_run(
        song, out, "--model-repo", tiny_model_repo, "--shifts", "0", "--two-stems", "vocals",
        env={"STEMKUBE_CHUNK_SECONDS": "12", "STEMKUBE_MP3_PIECES": "3"},
    )  # fmt: skip

    timings = assert_stages_add_up(wall, logs)
    assert timings["encode"] > 0  # pieces encoded between chunks
    members = zip_members(out, tmp_path / "unzipped")
    assert sorted(members) == ["no_vocals.mp3", "vocals.mp3"]
    for path in members.values():
        got = probe(path)
        assert (got.sample_rate, got.channels, got.bit_rate) == (SAMPLE_RATE, 2, 320_000)
        assert got.samples == 45 * SAMPLE_RATE  # exactly: delay and padding as one stream's
        check = subprocess.run(
            [audio_tool("ffmpeg"), "-v", "warning", "-i", str(path), "-f", "null", "-"],
            capture_output=True, text=True, check=True, timeout=60,
        )  # fmt: skip
        assert check.stderr == "", check.stderr  # every frame decodes
