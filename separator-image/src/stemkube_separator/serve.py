"""``stemkube-separate --serve``: local mode's long-lived worker.

One process runs many separations, one per request line on its standard input
(``stemkube_contract.batch.serve_request``: a single run's command line and the file its log
goes to), each exactly as ``stemkube-separate ARGV`` runs it (``cli.main``: the same parsing and
usage errors, progress file, termination log, exit code and stage timings), and answers each
with one reply line on its standard output (``batch.serve_reply``). What a process per song paid
every time (Python's start-up, importing torch and Demucs, loading the weights, a GPU's context)
this one pays once: the models it loads stay loaded between songs (``Kept``).

Standard output carries the replies only; anything else the process writes goes to its
standard error, which is the request's log file while a request runs. The end of standard
input ends the worker (exit 0). SIGTERM ends the running request as it ends a single run (exit
code 143 and its termination message), which is answered, and then the worker (143).

``--tag`` is any text shown in the worker's command line: local mode gives its data folder, so
that after a crash of the API its next start knows the worker for its own.
"""

import argparse
import contextlib
import gc
import logging
import os
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from types import FrameType
from typing import TextIO

import torch

from stemkube_contract import batch
from stemkube_contract.exitcodes import TERMINATED, TERMINATED_MESSAGE
from stemkube_separator import allocator, cli, exitcodes, logs, model, options
from stemkube_separator import pipeline as pipeline  # imported up front: no request pays for it

log = logging.getLogger("stemkube_separator.serve")

# One model: a deployment that serves several would otherwise hold every one it was ever asked
# for (an htdemucs_ft bag alone is four models), and most songs ask for the default.
DEFAULT_KEEP_MODELS = 1


class Kept(model.Loaded):
    """The models this worker keeps between songs: at most ``limit``, the most recently used."""

    def __init__(self, limit: int = DEFAULT_KEEP_MODELS) -> None:
        super().__init__()
        self.limit = max(1, limit)

    def get(self, name: str, repo: str | None) -> model.AnyModel:
        key = (name, repo)
        if key in self.models:
            self.models[key] = self.models.pop(key)  # now the most recently used
            log.info(
                "model %s reused: this worker loaded it for an earlier song",
                name,
                extra={"model_reused": True},
            )
            return self.models[key]
        self._evict(self.limit - 1)
        started = time.monotonic()
        loaded = super().get(name, repo)
        log.info(
            "model %s loaded in %.2f s; this worker keeps it for the next songs",
            name,
            time.monotonic() - started,
            extra={"model_reused": False},
        )
        return loaded

    def _evict(self, keep: int) -> None:
        """Drop the least recently used models down to ``keep``, their memory given back
        before the next one loads (peak memory: one model's worth, not two)."""
        dropped = False
        while len(self.models) > keep:
            oldest = next(iter(self.models))
            del self.models[oldest]
            log.info("model %s dropped to make room for another", oldest[0])
            dropped = True
        if dropped:
            release_memory()


def release_memory() -> None:
    """Give back what a song left: tensors held in reference cycles, a GPU's cached blocks
    (another worker may share the GPU, and an idle worker should hold its models only) and the
    heap's free pages (the allocator settings of ``allocator`` never trim it otherwise)."""
    gc.collect()
    torch.cuda.empty_cache()  # a no-op where CUDA was never used
    allocator.release_free_memory()


# Output ----------------------------------------------------------------------------------------


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()


@contextlib.contextmanager
def output_to(path: str) -> Iterator[None]:
    """The process's standard output and error go to ``path`` (appended) for the block: the
    request's JSON log lines, argparse's usage, a library's warnings and a fatal error's trace
    land in its log, as a single run's whole output did."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    except OSError as exc:
        log.warning("cannot write the log %s (%s); this request logs here", path, exc)
        yield
        return
    _flush()
    saved = (os.dup(1), os.dup(2))
    try:
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        yield
    finally:
        _flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for copy in saved:
            os.close(copy)


def take_stdout() -> TextIO:
    """The replies get the real standard output to themselves; the process's own file 1
    (``print``, a library's chatter) goes where standard error goes."""
    _flush()
    replies = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    return replies


# Serving ---------------------------------------------------------------------------------------


class Worker:
    def __init__(self, kept: Kept) -> None:
        self.kept = kept
        self.answering = False  # a request's code is known and its reply not written yet
        self.stopping = False

    def _on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True
        # While a request's answer is being written, finish it first (the loop then ends);
        # anywhere else (waiting for a request, starting one) stop at once.
        if not self.answering:
            raise cli.Terminated()

    def serve(self, requests: TextIO, replies: TextIO) -> int:
        signal.signal(signal.SIGTERM, self._on_sigterm)
        try:
            while not self.stopping:
                line = requests.readline()
                if not line:
                    return exitcodes.OK
                code = self.handle(line)
                self.answering = True
                answered = reply(replies, code)
                self.answering = False
                release_memory()  # after the answer: the job is done for whoever waits on it
                if not answered:  # nobody reads the answers any more: no one will ask again
                    return exitcodes.OK
        except cli.Terminated:
            pass
        return TERMINATED

    def handle(self, line: str) -> int:
        """One request, run to its exit code."""
        try:
            argv, log_path = batch.parse_serve_request(line)
        except ValueError as exc:  # JSONDecodeError is one
            log.error("not a request (%s): %.200r", exc, line)
            return exitcodes.USAGE
        try:
            with output_to(log_path):
                code = run(argv, self.kept)
        finally:
            signal.signal(signal.SIGTERM, self._on_sigterm)  # cli.main set its own
            logs.setup(None)  # the worker's own lines name no job
        if code == TERMINATED:
            self.stopping = True
        return code


def run(argv: list[str], kept: Kept) -> int:
    """``stemkube-separate ARGV`` in this process, with the models kept."""
    try:
        return cli.main(argv, kept)
    except cli.Terminated:
        # SIGTERM outside cli.main's own handling (before its handler was set, or as it
        # returned): the request ends as a terminated single run does.
        code, reason = TERMINATED, TERMINATED_MESSAGE
    except Exception as exc:  # outside cli.main's own handling too: this worker goes on
        log.exception("unexpected error")
        code, reason = exitcodes.CRASH, f"unexpected error: {type(exc).__name__}: {exc}"
    cli.write_termination_log(options.termination_log_hint(argv, os.environ), reason)
    return code


def reply(replies: TextIO, code: int) -> bool:
    try:
        replies.write(batch.serve_reply(code))
        replies.flush()
    except (BrokenPipeError, ValueError):  # the reader is gone, or the stream closed
        return False
    return True


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stemkube-separate --serve",
        description="Run one separation per request line on standard input, keeping the "
        "models loaded between them; answer each on standard output.",
    )
    parser.add_argument(
        "--keep-models",
        type=int,
        default=DEFAULT_KEEP_MODELS,
        metavar="N",
        help=f"models kept loaded at once, the most recently used (default {DEFAULT_KEEP_MODELS})",
    )
    parser.add_argument(
        "--tag", help="any text, shown in the command line (local mode: its data folder)"
    )
    return parser


def main(args: Sequence[str]) -> int:
    try:
        ns = build_parser().parse_args(list(args))
    except SystemExit as exc:  # a usage error (2), or --help (0)
        return exc.code if isinstance(exc.code, int) else exitcodes.USAGE
    logs.setup(None)
    replies = take_stdout()
    worker = Worker(Kept(ns.keep_models))
    # What the imports made lives as long as the process: out of the collector's sight, the
    # collection after each song takes microseconds instead of a tenth of a second.
    gc.collect()
    gc.freeze()
    log.info(
        "serving separations, one per request line",
        extra={"pid": os.getpid(), "tag": ns.tag},
    )
    code = worker.serve(sys.stdin, replies)
    log.info("worker ends", extra={"exit_code": code})
    return code
