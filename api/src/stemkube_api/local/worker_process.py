"""One long-lived ``stemkube-separate --serve`` process of a local worker slot: it is given one
job at a time as a request line on its standard input, and answers with the job's exit code on
its standard output. The answers are read without blocking the workers' loop, which polls."""

import contextlib
import logging
import os
import subprocess
import time
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path

from stemkube_contract import batch

log = logging.getLogger(__name__)

GRACE = 10.0  # seconds a stopped worker gets to end its job cleanly before SIGKILL
READ_SIZE = 4096


def split_replies(buffer: bytes) -> tuple[list[int], bytes]:
    """The exit codes of the whole reply lines in ``buffer``, and what is left of a line still
    being written. A line that is not a reply is skipped: the worker writes nothing else there."""
    *lines, rest = buffer.split(b"\n")
    codes = [batch.parse_serve_reply(line.decode("utf-8", "replace")) for line in lines if line]
    return [code for code in codes if code is not None], rest


class WorkerProcess:
    def __init__(self, process: "subprocess.Popen[bytes]") -> None:
        self.process = process
        self.kill_at: float | None = None  # monotonic; set once it was told to end
        self.terminated = False  # SIGTERM sent: it ends after answering its job
        self._pending = b""
        self._replies: deque[int] = deque()
        assert process.stdout is not None
        os.set_blocking(process.stdout.fileno(), False)

    @classmethod
    def start(
        cls, command: Sequence[str], env: Mapping[str, str], log_path: Path
    ) -> "WorkerProcess":
        """The worker for a job whose log is ``log_path``: what the worker writes before it
        reads that job's request (its start, an import that fails) goes there too, as a process
        per job's whole output did. Raises OSError if the program cannot be started."""
        with log_path.open("ab") as out:
            # A session of its own: Ctrl-C in the terminal reaches the API, which stops the
            # workers itself (and requeues their jobs).
            process = subprocess.Popen(
                list(command),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=out,
                env=dict(env),
                start_new_session=True,
            )
        return cls(process)

    @property
    def pid(self) -> int:
        return self.process.pid

    def send(self, argv: Sequence[str], log_path: Path) -> bool:
        """Give it a job; False if it can take none (it ended, or was told to)."""
        stdin = self.process.stdin
        if self.kill_at is not None or stdin is None or stdin.closed:
            return False
        try:
            stdin.write(batch.serve_request(argv, str(log_path)).encode())
            stdin.flush()
        except (BrokenPipeError, ValueError):
            return False
        return True

    def reply(self) -> int | None:
        """The exit code of the job it was given, once it answered."""
        self._read()
        return self._replies.popleft() if self._replies else None

    def _read(self) -> None:
        stdout = self.process.stdout
        if stdout is None or stdout.closed:
            return
        with contextlib.suppress(BlockingIOError):
            while chunk := os.read(stdout.fileno(), READ_SIZE):
                codes, self._pending = split_replies(self._pending + chunk)
                self._replies.extend(codes)

    def poll(self) -> int | None:
        """Its exit code once it ended (negative: the signal that killed it)."""
        return self.process.poll()

    def terminate(self) -> None:
        """SIGTERM: the job it runs ends as a single run's would on SIGTERM, then it ends."""
        if not self.terminated:
            self.terminated = True
            with contextlib.suppress(ProcessLookupError):
                self.process.terminate()
        self._deadline()

    def retire(self) -> None:
        """No more jobs for it: the end of its input ends an idle worker at once (exit 0)."""
        stdin = self.process.stdin
        if stdin is not None:
            with contextlib.suppress(OSError):
                stdin.close()
        self._deadline()

    def _deadline(self) -> None:
        if self.kill_at is None:
            self.kill_at = time.monotonic() + GRACE

    def kill_if_overdue(self) -> None:
        if self.kill_at is not None and time.monotonic() > self.kill_at:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()

    def wait(self, timeout: float = GRACE) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    def release(self) -> None:
        """Once it ended: its pipes closed (the loop would run out of file descriptors)."""
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
