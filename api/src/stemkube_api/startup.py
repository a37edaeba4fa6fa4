"""The lines a person reads when the service starts: where it answers, what it serves and
with which weights, where it keeps its data, and how to try it — or why it cannot separate
yet. Pure, but for ``ReadyServer``, which says them once the port is open."""

import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass

import uvicorn

from stemkube_contract.timefmt import human_duration

log = logging.getLogger("stemkube_api.cli")

ANY_ADDRESS = ("0.0.0.0", "::", "")


@dataclass(frozen=True)
class Launch:
    """What ``main`` serves and says: the summary of this service, and why it cannot
    separate now (None: it can), asked once it is up."""

    summary: str
    problem: Callable[[], str | None] = lambda: None
    keys_required: bool = False  # the curl line to try then sends one


def base_url(host: str, port: int) -> str:
    if host in ANY_ADDRESS:
        host = "localhost"  # listening on every address; this one works from this machine
    elif ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def local_summary(
    models: list[str],
    default: str,
    weights: str | None,
    data_dir: str,
    ttl_seconds: float,
    workers: int,
) -> str:
    others = [m for m in models if m != default]
    served = f"model {default}" + (f" (also {', '.join(others)})" if others else "")
    source = f"weights from {weights}" if weights else "weights from the Demucs hub (cached)"
    return (
        f"local mode, {served}, {source}, {workers} job(s) at a time, data in {data_dir}, "
        f"finished jobs kept {human_duration(ttl_seconds)}"
    )


def ready_lines(url: str, launch: Launch, problem: str | None) -> list[tuple[int, str]]:
    """(level, message) lines once the port is open."""
    key = '-H "Authorization: Bearer $STEMKUBE_API_KEY" ' if launch.keys_required else ""
    if problem:
        return [
            (logging.WARNING, f"stemkube is up on {url} ({launch.summary})"),
            (logging.WARNING, f"but it cannot separate yet: {problem}"),
        ]
    return [
        (logging.INFO, f"stemkube is ready on {url} ({launch.summary})"),
        (logging.INFO, f"try it: curl {key}-F file=@song.mp3 {url}/upload"),
    ]


class ReadyServer(uvicorn.Server):
    """uvicorn's server, saying ``ready_lines`` after its own "running on" line."""

    def __init__(self, config: uvicorn.Config, launch: Launch) -> None:
        super().__init__(config)
        self.launch = launch

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            url = base_url(self.config.host, self.config.port)
            for level, message in ready_lines(url, self.launch, self.launch.problem()):
                log.log(level, "%s", message)
