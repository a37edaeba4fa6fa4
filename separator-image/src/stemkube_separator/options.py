"""The command line: parsing and checking it, with no I/O beyond reading the environment.

The separation options (model, stems, format, bitrate, shifts...) come from the contract's
catalogue: their flags, types, allowed values, defaults and the rules between them are stated
there once. What is only the program's own (where the model weights are, the device, progress,
limits) is declared here.

Two forms: a single run (``INPUT OUTPUT``), and a batch (``--item INPUT OUTPUT NAMESPACE/NAME``,
repeated, instead of them; ``stemkube_contract.batch``), each form with a parser of its own, so
that a single run's command line is parsed exactly as it always was."""

import argparse
import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, NoReturn, cast

from stemkube_contract import options as catalogue
from stemkube_contract.batch import ITEM_FLAG, ITEM_METAVAR
from stemkube_contract.limits import (
    DEFAULT_MAX_DURATION,
    MAX_DURATION_ENV,
    MAX_FILE_SIZE_ENV,
    max_file_size_from_env,
    parse_size,
)
from stemkube_contract.models import DEFAULT_MODEL, Catalog

Format = Literal["mp3", "wav", "flac"]
Depth = Literal["16", "24", "32f"]
Device = Literal["auto", "cpu", "cuda"]
Precision = Literal["auto", "fp32", "tf32", "bf16", "fp16"]
PRECISIONS = cast(tuple[Precision, ...], catalogue.PRECISIONS)

DEFAULT_TERMINATION_LOG = "/dev/termination-log"
# The largest input accepted, in bytes: the API's MAX_FILE_SIZE, read the same way
# (``stemkube_contract.limits``), so a SeparationJob made with kubectl meets the same limit.
DEFAULT_MAX_FILE_SIZE = max_file_size_from_env({})
TERMINATION_LOG_ENV = "STEMKUBE_TERMINATION_LOG"
# LAME's -q (0 slowest and best ... 9 fastest): 5 keeps its psychoacoustic model and noise
# shaping and encodes 25% faster than LAME's own default of 3 (bench/README.md); at a
# constant bitrate the file size is the same whatever the setting.
DEFAULT_MP3_QUALITY = 5

_DEFAULTS = catalogue.effective({}, Catalog())
_FORMAT = cast(Format, _DEFAULTS["format"])
_BITRATE = cast(int, _DEFAULTS["bitrate"])
_DEPTH = cast(Depth, catalogue.BY_NAME["wav_depth"].default)
_SHIFTS = cast(int, _DEFAULTS["shifts"])
_OVERLAP = cast(float, _DEFAULTS["overlap"])


@dataclass(frozen=True)
class Item:
    """One member of a batch: its song, its result and its SeparationJob."""

    input: str
    output: str
    namespace: str
    name: str

    @property
    def member(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class Options:
    input: str  # "" in a batch: each item has its own
    output: str
    model: str = DEFAULT_MODEL
    model_repo: str | None = None
    stems: tuple[str, ...] | None = None  # None: every stem the model has
    two_stems: str | None = None
    format: Format = _FORMAT
    bitrate: int = _BITRATE  # kbit/s, MP3 only
    mp3_quality: int = DEFAULT_MP3_QUALITY  # LAME -q, MP3 only
    wav_depth: Depth = _DEPTH  # WAV and FLAC
    shifts: int = _SHIFTS
    overlap: float = _OVERLAP
    segment: float | None = None  # seconds; None: the model's own
    device: Device = "auto"
    precision: Precision = "auto"
    progress_cr: tuple[str, str] | None = None  # (namespace, name)
    progress_file: str | None = None
    max_duration: float = DEFAULT_MAX_DURATION
    max_file_size: int = DEFAULT_MAX_FILE_SIZE  # bytes
    termination_log: str = DEFAULT_TERMINATION_LOG
    job_id: str | None = None
    items: tuple[Item, ...] = ()  # a batch's members, in order; () for a single run


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error through a hook (the termination log) before exiting."""

    report: Callable[[str], None] | None = None
    batch = False  # the parser of the batch form (``--item``)

    def error(self, message: str) -> NoReturn:
        if self.report is not None:
            self.report(f"usage error: {message}")
        super().error(message)


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:  # also rejects NaN
        raise argparse.ArgumentTypeError(f"must be a positive number, not {text}")
    return value


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _env_size(env: Mapping[str, str]) -> str:
    """MAX_FILE_SIZE as the default of --max-file-size; a malformed value is refused by the
    flag's own check, naming the variable."""
    try:
        return str(max_file_size_from_env(env))
    except ValueError:
        return env.get(MAX_FILE_SIZE_ENV, "")


def _cr(text: str) -> tuple[str, str]:
    namespace, sep, name = text.partition("/")
    if not sep or not namespace or not name or "/" in name:
        raise argparse.ArgumentTypeError(f"expected NAMESPACE/NAME, not {text!r}")
    return namespace, name


def wants_items(argv: Sequence[str]) -> bool:
    """Whether a command line is a batch's (gives ``--item``)."""
    return any(arg == ITEM_FLAG or arg.startswith(f"{ITEM_FLAG}=") for arg in argv)


def build_parser(env: Mapping[str, str], batch: bool = False) -> _Parser:
    """The single run's parser, or with ``batch`` the batch's: ``--item`` instead of the
    positional INPUT OUTPUT, and the single run's progress and job flags refused."""
    parser = _Parser(
        prog="stemkube-separate",
        description="Split a song into stems with Demucs and write them as a ZIP.",
    )
    parser.batch = batch
    if batch:
        parser.add_argument(
            ITEM_FLAG,
            nargs=3,
            action="append",
            required=True,
            metavar=ITEM_METAVAR,
            help="one song of the batch and its SeparationJob (repeated)",
        )
    else:
        parser.add_argument("input", help="local path or s3://bucket/key of the song")
        parser.add_argument("output", help="local path or s3://bucket/key of the ZIP to write")
    catalogue.add_arguments(parser, defaults=True, models=Catalog())
    parser.add_argument(
        "--model-repo", help="folder of models in Demucs's local-repo format (else: the hub)"
    )
    parser.add_argument(
        "--mp3-quality",
        type=int,
        choices=range(10),
        default=DEFAULT_MP3_QUALITY,
        metavar="0-9",
        help=f"LAME -q: 0 slowest ... 9 fastest (default {DEFAULT_MP3_QUALITY})",
    )
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=catalogue.DEFAULT_PRECISION,
        help="the model's arithmetic: auto (TF32 on a GPU that has it, else fp32), fp32, tf32 "
        "(fp32 on a CPU), bf16 or fp16 (autocast; fp16 needs a GPU); stems are float32 anyway",
    )
    if batch:
        # Refused (each member's progress goes to its own SeparationJob and its lines name
        # it), but known, so that the refusal says why; not in a mutually exclusive group,
        # whose usage argparse cannot format with hidden members.
        parser.add_argument("--progress-cr", type=_cr, help=argparse.SUPPRESS)
        parser.add_argument("--progress-file", help=argparse.SUPPRESS)
    else:
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
        "--max-file-size",
        type=_size,
        default=_env_size(env),
        metavar="SIZE",
        help=f"largest input accepted, e.g. 500MB (env {MAX_FILE_SIZE_ENV}; default 500MB)",
    )
    parser.add_argument(
        "--termination-log",
        default=env.get(TERMINATION_LOG_ENV) or DEFAULT_TERMINATION_LOG,
        help=f"where the failure reason goes (env {TERMINATION_LOG_ENV})",
    )
    parser.add_argument(
        "--job-id",
        help=argparse.SUPPRESS if batch else "job id for the logs (default: NAME of --progress-cr)",
    )
    return parser


def termination_log_hint(argv: Sequence[str], env: Mapping[str, str]) -> str:
    """Where to report a usage error, found before the full parse (which is what failed)."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--termination-log")
    known, _ = pre.parse_known_args(list(argv))
    value = known.termination_log or env.get(TERMINATION_LOG_ENV) or DEFAULT_TERMINATION_LOG
    return str(value)


def _check_rules(parser: _Parser, ns: argparse.Namespace) -> None:
    """The catalogue's rules between options (FLAC has no float samples...). An option that
    does not apply to the format (a bitrate with WAV) is ignored, as its default would be."""
    given = {k: v for k, v in catalogue.from_namespace(ns).items() if v is not None}
    for rule in catalogue.RULES:
        if not rule.not_applicable and not rule.holds(given):
            parser.error(f"{catalogue.BY_NAME[rule.field].flag}: {rule.message}")


# The single run's flags a batch refuses, with why.
_NOT_IN_A_BATCH = {
    "progress_cr": "--progress-cr",
    "progress_file": "--progress-file",
    "job_id": "--job-id",
}


def _items(parser: _Parser, raw: list[list[str]]) -> tuple[Item, ...]:
    items: list[Item] = []
    for input_url, output_url, member in raw:
        try:
            namespace, name = _cr(member)
        except argparse.ArgumentTypeError as exc:
            parser.error(f"{ITEM_FLAG} {input_url} {output_url} {member}: {exc}")
        items.append(Item(input_url, output_url, namespace, name))
    members = [item.member for item in items]
    twice = sorted({m for m in members if members.count(m) > 1})
    if twice:
        parser.error(
            f"{ITEM_FLAG}: each SeparationJob once; given more than once: {', '.join(twice)}"
        )
    return tuple(items)


def _parse_batch(
    parser: _Parser, argv: Sequence[str]
) -> tuple[argparse.Namespace, tuple[Item, ...]]:
    ns, extra = parser.parse_known_args(list(argv))
    if extra:
        loose = [arg for arg in extra if not arg.startswith("-")]
        if loose and len(loose) == len(extra):
            parser.error(
                f"INPUT OUTPUT are not given with {ITEM_FLAG} (each member names its own): "
                f"{' '.join(extra)}"
            )
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    for dest, flag in _NOT_IN_A_BATCH.items():
        if getattr(ns, dest) is not None:
            parser.error(
                f"{flag} is not allowed with {ITEM_FLAG}: each member's progress goes to its "
                "own SeparationJob and its log lines name it"
            )
    return ns, _items(parser, ns.item)


def parse(
    argv: Sequence[str], env: Mapping[str, str] | None = None, parser: _Parser | None = None
) -> Options:
    env = os.environ if env is None else env
    batch = wants_items(argv)
    if parser is None or parser.batch != batch:
        given = parser
        parser = build_parser(env, batch)
        parser.report = given.report if given is not None else None
    items: tuple[Item, ...] = ()
    if batch:
        ns, items = _parse_batch(parser, argv)
        ns.input = ns.output = ""
    else:
        ns = parser.parse_args(list(argv))
    _check_rules(parser, ns)
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
        precision=ns.precision,
        progress_cr=ns.progress_cr,
        progress_file=ns.progress_file,
        max_duration=ns.max_duration,
        max_file_size=ns.max_file_size,
        termination_log=ns.termination_log,
        job_id=job_id,
        items=items,
    )


def member_options(opts: Options, item: Item) -> Options:
    """A batch member's options: the batch's, with its own song, result, SeparationJob and
    job id, as a single run of it would have them."""
    return dataclasses.replace(
        opts,
        input=item.input,
        output=item.output,
        progress_cr=(item.namespace, item.name),
        job_id=item.name,
        items=(),
    )
