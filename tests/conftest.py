"""Fixtures shared by the tests: a real local HTTP server and synthetic MNIST arrays."""

from __future__ import annotations

import collections
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from helpers_mnist import idx_md5s, synthetic_mnist, write_synthetic_idx


@dataclass
class Route:
    """What the local server answers for one path.

    ``truncate_to`` announces the full ``Content-Length`` but sends only that many
    bytes before closing the connection, like a transfer cut off midway.
    """

    body: bytes
    status: int = 200
    content_type: str = "application/octet-stream"
    truncate_to: int | None = None


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        owner = self.server.owner
        with owner.lock:
            owner.hits[path] += 1
        route = owner.routes.get(path, Route(b"not found", status=404, content_type="text/plain"))
        self.send_response(route.status)
        self.send_header("Content-Type", route.content_type)
        self.send_header("Content-Length", str(len(route.body)))
        self.end_headers()
        end = len(route.body) if route.truncate_to is None else route.truncate_to
        self.wfile.write(route.body[:end])

    def log_message(self, format: str, *args) -> None:
        """Keep the test output quiet."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: LocalHTTPServer


class LocalHTTPServer:
    """An HTTP/1.0 server on 127.0.0.1 serving in-memory routes, counting requests.

    Attributes
    ----------
    url : str
        ``http://127.0.0.1:PORT``, without a trailing slash.
    routes : dict of str to Route
        Path (``/folder/file``) to answer; any other path gets a 404.
    hits : collections.Counter
        Number of GET requests per path, 404s included.
    """

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.hits: collections.Counter[str] = collections.Counter()
        self.lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.owner = self
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def serve(self, path: str, body: bytes, **route) -> str:
        """Serve ``body`` at ``path`` (keywords as in :class:`Route`); return its URL."""
        self.routes[path] = Route(body, **route)
        return self.url + path

    def start(self) -> None:
        """Start serving in a background thread."""
        self._thread.start()

    def close(self) -> None:
        """Stop serving and release the socket."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


@pytest.fixture
def http_server() -> Iterator[LocalHTTPServer]:
    """A started :class:`LocalHTTPServer` on an ephemeral port, shut down afterwards."""
    server = LocalHTTPServer()
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def synthetic_arrays() -> dict[str, np.ndarray]:
    """20 training and 10 test images from :func:`helpers_mnist.synthetic_mnist`, seed 0."""
    return synthetic_mnist(n_train=20, n_test=10, seed=0)


def pytest_collection_modifyitems(config, items) -> None:
    """Mark everything under tests/integration/ (real DVC, MLflow model loading, benchmarks)."""
    for item in items:
        if "integration" in item.path.parts:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="module")
def mirror(tmp_path_factory):
    """Synthetic MNIST, gzipped IDX files served by a real local HTTP server."""
    server = LocalHTTPServer()
    arrays = synthetic_mnist(n_train=300, n_test=60, seed=4)
    files = write_synthetic_idx(tmp_path_factory.mktemp("mirror"), arrays, gz=True)
    for path in files.values():
        server.serve(f"/mnist/{path.name}", path.read_bytes())
    server.start()
    yield server, idx_md5s(arrays)
    server.close()
