"""Starting, waiting for and stopping the tier's server processes."""

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path


class ComponentError(RuntimeError):
    """A component did not become ready; the message carries its log tail."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Process:
    name: str
    popen: "subprocess.Popen[bytes]"
    log_path: Path

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, grace: float = 10.0) -> None:
        if self.popen.poll() is not None:
            return
        # Each component runs in its own process group so that its children go with it.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGTERM)
        try:
            self.popen.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(timeout=grace)


def start(
    name: str, argv: Sequence[str | Path], log_dir: Path, env: dict[str, str] | None = None
) -> Process:
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    with log_path.open("wb") as log:
        popen = subprocess.Popen(
            [str(a) for a in argv],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
    return Process(name=name, popen=popen, log_path=log_path)


def wait_ready(
    proc: Process, ready: Callable[[], bool], timeout: float, what: str = "ready"
) -> None:
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if not proc.alive():
            raise ComponentError(
                f"{proc.name} exited with code {proc.popen.returncode} before it was {what}; "
                f"log tail ({proc.log_path}):\n{proc.log_tail()}"
            )
        try:
            if ready():
                return
        except Exception as exc:
            last_error = exc
        time.sleep(0.2)
    raise ComponentError(
        f"{proc.name} was not {what} within {timeout:.0f}s (last error: {last_error}); "
        f"log tail ({proc.log_path}):\n{proc.log_tail()}"
    )
