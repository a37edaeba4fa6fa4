"""A real HTTP server on 127.0.0.1 in a thread, for the tests of what the service calls out to
(URL import's sources, webhook receivers): yields its base URL, stops it after."""

import contextlib
import http.server
import threading
from collections.abc import Iterator


@contextlib.contextmanager
def http_server(handler: type[http.server.BaseHTTPRequestHandler], name: str) -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, name=name, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
