"""Starting, waiting for and stopping the tier's server processes."""

import contextlib
import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path


class ComponentError(RuntimeError):
    """A component did not become ready; the message carries its log tail."""


# Below Linux's ephemeral range (32768-60999) and the NodePorts (30000-32767): a port the
# kernel picks with bind(0) may be picked again for the next call, or for any process's
# outgoing connection, before our server binds it (a CI run started the API with --port
# equal to --metrics-port). Here only this test process hands ports out, never one twice.
_PORTS = range(20000, 30000)
_handed_out: set[int] = set()


def free_port() -> int:
    for _ in range(1000):
        port = random.choice(_PORTS)
        if port in _handed_out:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free port left in {_PORTS.start}-{_PORTS.stop - 1}")


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
