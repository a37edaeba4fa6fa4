"""Fixtures and helpers for the separator's tests: the tiny model repo, test audio made with the
ffmpeg command-line tool (an encoder independent of the separator's own FFmpeg, via PyAV), and
running ``stemkube-separate`` as the real program.
"""

import json
import os
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.harness.tiny_model import build_repo

VENV_BIN = Path(sys.executable).parent
SEPARATE = VENV_BIN / "stemkube-separate"
SAMPLE_RATE = 44100
MP3_FRAME = 1152  # samples: "within one frame" of the output codec
LAYOUTS = {1: "mono", 2: "stereo", 3: "2.1", 4: "quad", 6: "5.1", 8: "7.1"}


class AudioToolMissingError(RuntimeError):
    pass


def audio_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        # A missing tool is a failure, never a skip: CI installs it (.ci/run's packages).
        raise AudioToolMissingError(f"{name} is missing: install the Debian package ffmpeg")
    return path


def ffmpeg(*args: str | Path) -> None:
    subprocess.run(
        [audio_tool("ffmpeg"), "-hide_banner", "-loglevel", "error", "-y", *map(str, args)],
        check=True,
        timeout=120,
    )


def make_audio(
    path: Path,
    *codec_args: str,
    seconds: float = 1.5,
    rate: int = 44100,
    channels: int = 2,
) -> Path:
    """A test song: a different tone per channel (so a channel mix-up would show) plus noise."""
    layout = LAYOUTS.get(channels, f"{channels}c")
    tones = "|".join(f"c{i}=0.4*c{i % 2}" for i in range(channels))
    ffmpeg(
        "-f", "lavfi", "-i", f"sine=f=220:d={seconds}:r={rate}",
        "-f", "lavfi", "-i", f"anoisesrc=d={seconds}:r={rate}:a=0.05",
        "-filter_complex",
        f"[0][1]amerge=inputs=2,pan={layout}|{tones}[out]",
        "-map", "[out]", *codec_args, path,
    )  # fmt: skip
    return path


@dataclass(frozen=True)
class Decoded:
    codec: str
    sample_rate: int
    channels: int
    samples: int  # per channel, as FFmpeg decodes them (encoder delay and padding removed)
    bit_rate: int | None

    @property
    def seconds(self) -> float:
        return self.samples / self.sample_rate


def probe(path: Path) -> Decoded:
    """What the ffmpeg tools (not the separator) make of an audio file."""
    out = subprocess.run(
        [audio_tool("ffprobe"), "-v", "error", "-select_streams", "a:0", "-show_entries",
         "stream=codec_name,sample_rate,channels,bit_rate", "-of", "json", str(path)],
        check=True, capture_output=True, text=True, timeout=60,
    ).stdout  # fmt: skip
    stream = json.loads(out)["streams"][0]
    pcm = subprocess.run(
        [audio_tool("ffmpeg"), "-v", "error", "-i", str(path), "-map", "0:a:0",
         "-f", "f32le", "-acodec", "pcm_f32le", "-"],
        check=True, capture_output=True, timeout=60,
    ).stdout  # fmt: skip
    channels = int(stream["channels"])
    bit_rate = stream.get("bit_rate")
    return Decoded(
        codec=stream["codec_name"],
        sample_rate=int(stream["sample_rate"]),
        channels=channels,
        samples=len(pcm) // (4 * channels),
        bit_rate=int(bit_rate) if bit_rate and bit_rate != "N/A" else None,
    )


def zip_members(zip_path: Path, into: Path) -> dict[str, Path]:
    with zipfile.ZipFile(zip_path) as zf:
        assert zf.testzip() is None, f"{zip_path}: a member is corrupt"
        zf.extractall(into)
        return {name: into / name for name in zf.namelist()}


def run_separator(
    *args: str | Path, env: dict[str, str] | None = None, timeout: float = 300
) -> "subprocess.CompletedProcess[str]":
    """``stemkube-separate`` as the Job's pod runs it: a process of its own."""
    full_env = {**os.environ, **(env or {})}
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        if env is None or name not in env:
            full_env.pop(name, None)
    return subprocess.run(
        [str(SEPARATE), *map(str, args)],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def log_lines(stderr: str) -> list[dict[str, object]]:
    """The JSON log lines; anything else on stderr fails the parse, as it should."""
    return [json.loads(line) for line in stderr.splitlines() if line.strip()]


@pytest.fixture(scope="session")
def tiny_model_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Demucs local repo with a tiny random-weight ``htdemucs`` and ``htdemucs_6s``."""
    return build_repo(tmp_path_factory.mktemp("models"), names=("htdemucs", "htdemucs_6s"))


# The loopback HTTP server of URL imports, a fixture of every test (this module is a plugin).
from tests.harness.urlserver import url_server  # noqa: E402, F401
