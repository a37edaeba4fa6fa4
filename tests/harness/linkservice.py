"""A stand-in for the chart's job-link Service: one loopback address for the operators' link
servers, as kube-proxy gives a ClusterIP to whichever replica answers.

The tier runs each operator as a process with a link server on a port of its own; the separator
pods a Job runs get one URL (``stemkube_contract.joblink.URL_ENV``) that must keep working when
the operator that made their Job dies and another takes over. Each accepted connection is
relayed, byte for byte, to the first operator (in the order they were added, newest first) that
accepts a TCP connection; none does: the connection is closed, as a Service without ready
endpoints refuses it. Nothing is read or changed on the way.
"""

import contextlib
import socket
import threading

_BUFFER = 1 << 16


class LinkService:
    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._backends: list[int] = []
        self._lock = threading.Lock()
        self._closed = threading.Event()
        threading.Thread(target=self._accept, name="link-service", daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def add(self, port: int) -> None:
        with self._lock:
            self._backends.insert(0, port)

    def close(self) -> None:
        self._closed.set()
        with contextlib.suppress(OSError):
            self._listener.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                downstream, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._relay, args=(downstream,), daemon=True).start()

    def _connect(self) -> socket.socket | None:
        with self._lock:
            ports = list(self._backends)
        for port in ports:
            try:
                return socket.create_connection(("127.0.0.1", port), timeout=2)
            except OSError:
                continue
        return None

    def _relay(self, downstream: socket.socket) -> None:
        upstream = self._connect()
        if upstream is None:
            downstream.close()
            return
        upstream.settimeout(None)
        back = threading.Thread(target=_pump, args=(upstream, downstream), daemon=True)
        back.start()
        _pump(downstream, upstream)
        back.join()
        for end in (downstream, upstream):
            with contextlib.suppress(OSError):
                end.close()


def _pump(source: socket.socket, target: socket.socket) -> None:
    try:
        while data := source.recv(_BUFFER):
            target.sendall(data)
    except OSError:
        pass
    with contextlib.suppress(OSError):
        target.shutdown(socket.SHUT_WR)
