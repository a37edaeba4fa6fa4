"""A real HTTP server on loopback for URL imports (``POST /jobs`` with a URL, the separator's
``urlfetch``): Python's ``http.server`` in a thread, serving a real song and the answers a
fetch must cope with. The tiers reach it only through the test-only allow-list
``STEMKUBE_URL_ALLOW_CIDRS=127.0.0.0/8`` (``ALLOW_LOOPBACK``); nothing here ever makes the
code under test send traffic beyond loopback."""

import http.server
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from stemkube_contract.addresses import ALLOW_CIDRS_ENV
from tests.harness.loopback import http_server

ALLOW_LOOPBACK = {ALLOW_CIDRS_ENV: "127.0.0.0/8"}
HTML = b"<!DOCTYPE html>\n<html><head><title>Not a song</title></head><body>hi</body></html>\n"


@dataclass
class UrlServer:
    base: str  # http://127.0.0.1:PORT
    song: bytes
    requests: list[str] = field(default_factory=list)  # paths asked for, query included

    def url(self, path: str) -> str:
        return f"{self.base}{path}"


def _handler(server: UrlServer) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def _send(self, status: int, body: bytes, kind: str, **headers: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            for name, value in headers.items():
                self.send_header(name.replace("_", "-"), value)
            self.end_headers()
            self.wfile.write(body)

        def _redirect(self, location: str, status: int = 302) -> None:
            self.send_response(status)
            self.send_header("Location", location)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_GET(self) -> None:
            server.requests.append(self.path)
            path = self.path.split("?", 1)[0]
            if path in ("/song.wav", "/music/song.wav"):
                self._send(200, server.song, "audio/wav")
            elif path == "/octet":  # a song as a generic download
                self._send(200, server.song, "application/octet-stream")
            elif path.startswith("/hops/"):  # /hops/N: N more redirects, then the song
                left = int(path.rsplit("/", 1)[1])
                target = "/song.wav" if left == 0 else f"/hops/{left - 1}"
                self._redirect(target, 301 if left % 2 else 307)
            elif path == "/page.html":
                self._send(200, HTML, "text/html; charset=utf-8")
            elif path == "/disguised.mp3":  # HTML said to be a download
                self._send(200, HTML, "application/octet-stream")
            elif path == "/missing":
                self._send(404, b"not found\n", "text/plain")
            elif path == "/broken":
                self._send(503, b"try later\n", "text/plain")
            elif path == "/slow":  # a body that stops coming
                self.send_response(200)
                self.send_header("Content-Type", "audio/wav")
                self.send_header("Content-Length", str(len(server.song)))
                self.end_headers()
                self.wfile.write(server.song[:1000])
                self.wfile.flush()
                time.sleep(5)
            elif path == "/huge":  # more than any limit, no length said: counted as it comes
                self.send_response(200)
                self.send_header("Content-Type", "audio/wav")
                self.send_header("Connection", "close")
                self.end_headers()
                chunk = server.song[:44] + bytes(64 * 1024 - 44)
                try:
                    for _ in range(4096):  # 256 MiB at most
                        self.wfile.write(chunk)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                self.close_connection = True
            elif path == "/huge-declared":  # says its size up front
                self.send_response(200)
                self.send_header("Content-Type", "audio/wav")
                self.send_header("Content-Length", str(10 * 1024**3))
                self.end_headers()
                self.close_connection = True
            elif path.startswith("/to/"):  # /to/<anything>: a redirect to the rest of the path
                self._redirect(self.path[len("/to/") :])
            else:
                self._send(404, b"no such path\n", "text/plain")

    return Handler


@pytest.fixture
def url_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UrlServer]:
    """The server, its song a real WAV made by the ffmpeg tool."""
    from tests.harness.separator_fixtures import make_audio

    served = tmp_path_factory.mktemp("served") / "song.wav"
    song = make_audio(served, "-c:a", "pcm_s16le", seconds=1.5).read_bytes()
    state = UrlServer("", song)
    with http_server(_handler(state), "url-server") as state.base:
        yield state
