"""The command line: parsing and checking it, with no I/O beyond reading the environment."""

import argparse
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, NoReturn

Format = Literal["mp3", "wav", "flac"]
Depth = Literal["16", "24", "32f"]
Device = Literal["auto", "cpu", "cuda"]

DEFAULT_MODEL = "htdemucs"
DEFAULT_MAX_DURATION = 3600.0
DEFAULT_TERMINATION_LOG = "/dev/termination-log"
MAX_DURATION_ENV = "STEMKUBE_MAX_DURATION"
TERMINATION_LOG_ENV = "STEMKUBE_TERMINATION_LOG"
# LAME's range of constant bitrates for 44.1 kHz stereo.
MP3_BITRATES = (32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320)
# LAME's -q (0 slowest and best ... 9 fastest): 5 keeps its psychoacoustic model and noise
# shaping and encodes 25% faster than LAME's own default of 3 (bench/README.md); at a
# constant bitrate the file size is the same whatever the setting.
DEFAULT_MP3_QUALITY = 5


@dataclass(frozen=True)
class Options:
    input: str
    output: str
    model: str = DEFAULT_MODEL
    model_repo: str | None = None
    stems: tuple[str, ...] | None = None  # None: every stem the model has
    two_stems: str | None = None
    format: Format = "mp3"
    bitrate: int = 320  # kbit/s, MP3 only
    mp3_quality: int = DEFAULT_MP3_QUALITY  # LAME -q, MP3 only
    wav_depth: Depth = "16"  # WAV and FLAC
    shifts: int = 1
    overlap: float = 0.25
    segment: float | None = None  # seconds; None: the model's own
    device: Device = "auto"
    progress_cr: tuple[str, str] | None = None  # (namespace, name)
    progress_file: str | None = None
    max_duration: float = DEFAULT_MAX_DURATION
    termination_log: str = DEFAULT_TERMINATION_LOG
    job_id: str | None = None


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error through a hook (the termination log) before exiting."""

    report: Callable[[str], None] | None = None

    def error(self, message: str) -> NoReturn:
        if self.report is not None:
            self.report(f"usage error: {message}")
        super().error(message)


def _stem_list(text: str) -> tuple[str, ...]:
    stems = tuple(s.strip() for s in text.split(",") if s.strip())
    if not stems:
        raise argparse.ArgumentTypeError("expected a comma-separated list of stem names")
    if len(set(stems)) != len(stems):
        raise argparse.ArgumentTypeError(f"a stem is named twice in {text!r}")
    return stems


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {value}")
    return value


def _overlap(text: str) -> float:
    value = float(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), not {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:  # also rejects NaN
        raise argparse.ArgumentTypeError(f"must be a positive number, not {text}")
    return value


def _bitrate(text: str) -> int:
    value = int(text)
    if value not in MP3_BITRATES:
        raise argparse.ArgumentTypeError(f"must be one of {', '.join(map(str, MP3_BITRATES))}")
    return value


def _cr(text: str) -> tuple[str, str]:
    namespace, sep, name = text.partition("/")
    if not sep or not namespace or not name or "/" in name:
        raise argparse.ArgumentTypeError(f"expected NAMESPACE/NAME, not {text!r}")
    return namespace, name


def build_parser(env: Mapping[str, str]) -> _Parser:
    parser = _Parser(
        prog="stemkube-separate",
        description="Split a song into stems with Demucs and write them as a ZIP.",
    )
    parser.add_argument("input", help="local path or s3://bucket/key of the song")
    parser.add_argument("output", help="local path or s3://bucket/key of the ZIP to write")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="Demucs model name")
    parser.add_argument(
        "--model-repo", help="folder of models in Demucs's local-repo format (else: the hub)"
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--stems", type=_stem_list, help="comma-separated stems to keep")
    which.add_argument("--two-stems", metavar="STEM", help="STEM and no_STEM (the rest)")
    parser.add_argument("--format", choices=("mp3", "wav", "flac"), default="mp3")
    parser.add_argument("--bitrate", type=_bitrate, default=320, help="MP3 kbit/s")
    parser.add_argument(
        "--mp3-quality",
        type=int,
        choices=range(10),
        default=DEFAULT_MP3_QUALITY,
        metavar="0-9",
        help=f"LAME -q: 0 slowest ... 9 fastest (default {DEFAULT_MP3_QUALITY})",
    )
    parser.add_argument(
        "--wav-depth", choices=("16", "24", "32f"), default="16", help="WAV/FLAC sample depth"
    )
    parser.add_argument("--shifts", type=_positive_int, default=1)
    parser.add_argument("--overlap", type=_overlap, default=0.25)
    parser.add_argument("--segment", type=_positive_float, help="seconds per model segment")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    progress = parser.add_mutually_exclusive_group()
    progress.add_argument("--progress-cr", type=_cr, metavar="NAMESPACE/NAME")
    progress.add_argument(
        "--progress-file", metavar="PATH", help="keep the latest percentage in this file"
    )
    parser.add_argument(
        "--max-duration",
        type=_positive_float,
        default=env.get(MAX_DURATION_ENV, str(DEFAULT_MAX_DURATION)),
        help=f"longest input accepted, seconds (env {MAX_DURATION_ENV}; default 3600)",
    )
    parser.add_argument(
        "--termination-log",
        default=env.get(TERMINATION_LOG_ENV) or DEFAULT_TERMINATION_LOG,
        help=f"where the failure reason goes (env {TERMINATION_LOG_ENV})",
    )
    parser.add_argument("--job-id", help="job id for the logs (default: NAME of --progress-cr)")
    return parser


def termination_log_hint(argv: Sequence[str], env: Mapping[str, str]) -> str:
    """Where to report a usage error, found before the full parse (which is what failed)."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--termination-log")
    known, _ = pre.parse_known_args(list(argv))
    value = known.termination_log or env.get(TERMINATION_LOG_ENV) or DEFAULT_TERMINATION_LOG
    return str(value)


def parse(
    argv: Sequence[str], env: Mapping[str, str] | None = None, parser: _Parser | None = None
) -> Options:
    env = os.environ if env is None else env
    parser = parser or build_parser(env)
    ns = parser.parse_args(list(argv))
    if ns.format == "flac" and ns.wav_depth == "32f":
        parser.error("--format flac stores integers: use --wav-depth 16 or 24")
    job_id = ns.job_id or (ns.progress_cr[1] if ns.progress_cr else None)
    return Options(
        input=ns.input,
        output=ns.output,
        model=ns.model,
        model_repo=ns.model_repo,
        stems=ns.stems,
        two_stems=ns.two_stems,
        format=ns.format,
        bitrate=ns.bitrate,
        mp3_quality=ns.mp3_quality,
        wav_depth=ns.wav_depth,
        shifts=ns.shifts,
        overlap=ns.overlap,
        segment=ns.segment,
        device=ns.device,
        progress_cr=ns.progress_cr,
        progress_file=ns.progress_file,
        max_duration=ns.max_duration,
        termination_log=ns.termination_log,
        job_id=job_id,
    )
