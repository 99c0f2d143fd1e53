"""moto as a real HTTP server on port 0, for the tests that reach AWS services other than
HealthImaging (S3 state, KMS keys, EventBridge and SQS for the emulator's events and watch)
through boto3 over HTTP. One helper, so every such fixture starts and stops it the same way."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def moto_server() -> Iterator[str]:
    """Start moto's threaded server on a free port; yield its URL; stop it."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()
