"""``stemkube-separate``: the command line, exit codes and the termination message."""

import importlib
import logging
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from types import FrameType
from typing import TYPE_CHECKING, NoReturn

from stemkube_contract.batch import SERVE_FLAG
from stemkube_contract.exitcodes import TERMINATED, TERMINATED_MESSAGE
from stemkube_separator import exitcodes, inputs, logs, options, progress
from stemkube_separator.errors import SeparatorError
from stemkube_separator.stages import FINISH, IMPORT, SETUP, Stages

# torch and Demucs are imported once the song is on its way (``_single``): what a process
# spends importing them is then also the time its input downloads and decodes.
if TYPE_CHECKING:
    from stemkube_separator import model

log = logging.getLogger("stemkube_separator")

# Kubernetes caps the termination message at 4096 bytes; one readable line is the aim.
MAX_MESSAGE = 1024


class Terminated(BaseException):
    """SIGTERM (the pod is being deleted): unwind so an upload in flight is aborted."""


def one_line(message: str) -> str:
    line = " ".join(message.split())
    return line if len(line) <= MAX_MESSAGE else line[: MAX_MESSAGE - 3] + "..."


def write_termination_log(path: str, message: str) -> None:
    """Best effort: a missing or read-only path must not hide the real failure."""
    try:
        with open(path, "w", encoding="utf-8") as file:
            file.write(one_line(message) + "\n")
    except OSError:
        pass


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise Terminated()


def exit_now(code: int) -> NoReturn:
    """End the process without the interpreter's teardown, which takes about half a second
    once torch is imported (finalising its modules) and has nothing left to do: OUTPUT is
    complete or abandoned, the temporary folder removed and the reporter closed."""
    logging.shutdown()  # flushes the log handlers
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main(argv: Sequence[str] | None = None, loaded: "model.Loaded | None" = None) -> int:
    """The program; with ``argv`` None it is the process itself (the console script or
    ``python -m``) and exits through ``exit_now`` instead of returning. ``loaded``: the models
    a long-lived caller keeps between runs (``serve``); none: this run loads its own."""
    # The process's own clock, from its start: the imports above are the first stage.
    stages = Stages.since_process_start() if argv is None else Stages()
    if argv is None:
        stages.lap(IMPORT)
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == [SERVE_FLAG]:  # local mode's long-lived worker: many runs, one process
        from stemkube_separator import serve

        code = serve.main(args[1:])
        if argv is None:
            exit_now(code)
        return code
    env = os.environ
    parser = options.build_parser(env)

    def usage_error(message: str) -> None:
        write_termination_log(options.termination_log_hint(args, env), message)

    parser.report = usage_error
    try:
        opts = options.parse(args, env, parser)
    except SystemExit as exc:  # argparse: 2 for a usage error, 0 for --help
        return exc.code if isinstance(exc.code, int) else exitcodes.USAGE

    logs.setup(opts.job_id)
    signal.signal(signal.SIGTERM, _on_sigterm)
    if opts.items:
        code, reason = _batch(opts, env, stages, loaded)
    else:
        code, reason = _single(opts, env, stages, loaded)
    if code != exitcodes.OK:
        log.error(one_line(reason), extra={"exit_code": code})
        write_termination_log(opts.termination_log, reason)
    stages.lap(FINISH)
    # The last line: every second since the process started, by stage (what follows is
    # flushing this line and exiting).
    log.info(
        "finished in %.2f s",
        stages.wall(),
        extra={"timings": stages.timings(), "wall": round(stages.wall(), 3), "exit_code": code},
    )
    if argv is None:
        exit_now(code)
    return code


def import_heavy(name: str, stages: Stages) -> None:
    """Imports ``stemkube_separator.<name>`` (torch, Demucs); its time goes to ``import`` the
    first time (a long-lived process has it already and shows no such stage)."""
    module = f"stemkube_separator.{name}"
    if module not in sys.modules:
        importlib.import_module(module)
        stages.lap(IMPORT)


def _single(
    opts: options.Options, env: Mapping[str, str], stages: Stages, loaded: "model.Loaded | None"
) -> tuple[int, str]:
    """One song: the exit code and the termination message."""
    reporter: progress.Reporter = progress.LogReporter()
    code, reason = exitcodes.OK, ""
    try:
        with inputs.start_early(opts, env) as early:
            if opts.progress_cr:
                reporter = progress.cr_reporter(*opts.progress_cr, env=env)
            elif opts.progress_file:
                reporter = progress.FileReporter(opts.progress_file)
            log.info(
                "separating %s into %s",
                inputs.shown(opts.input),
                opts.output,
                extra={"model": opts.model},
            )
            stages.lap(SETUP)
            import_heavy("pipeline", stages)  # torch, Demucs: while the song arrives
            from stemkube_separator import pipeline

            pipeline.run(opts, env, reporter, stages, loaded, early)
    except SeparatorError as exc:
        code, reason = exc.exit_code, str(exc)
    except Terminated:
        code, reason = TERMINATED, TERMINATED_MESSAGE
    except Exception as exc:
        log.exception("unexpected error")
        code, reason = exitcodes.CRASH, f"unexpected error: {type(exc).__name__}: {exc}"
    finally:
        reporter.close()
    return code, reason


def _batch(
    opts: options.Options, env: Mapping[str, str], stages: Stages, loaded: "model.Loaded | None"
) -> tuple[int, str]:
    """Several songs (``--item``): each member's end goes to its SeparationJob; the process's
    code and message say whether the Job must run the pod again (``batch``)."""
    members = [item.member for item in opts.items]
    try:
        log.info(
            "separating %d songs in one batch",
            len(members),
            extra={"model": opts.model, "members": members},
        )
        stages.lap(SETUP)
        import_heavy("batch", stages)
        from stemkube_separator import batch

        return batch.run(opts, env, stages, loaded)
    except SeparatorError as exc:  # it concerns every member: as a single run would end
        return exc.exit_code, str(exc)
    except Terminated:  # the member in flight gets no outcome; a next pod redoes it
        return TERMINATED, TERMINATED_MESSAGE
    except Exception as exc:
        log.exception("unexpected error")
        return exitcodes.CRASH, f"unexpected error: {type(exc).__name__}: {exc}"


if __name__ == "__main__":
    sys.exit(main())
