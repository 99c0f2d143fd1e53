"""Running the emulator: ``reconciler emulator serve`` and the in-thread server for tests.

:func:`build` assembles one emulator (store, backend, seeds, faults, quotas, WSGI app) from
options; :class:`ThreadedEmulator` runs it on a werkzeug threaded server in a background
thread on port 0 (moto's ``threaded_moto_server`` shape) and starts/stops in milliseconds;
:func:`serve` runs it in the foreground until SIGINT/SIGTERM and exits cleanly.

What ``serve`` prints goes to stdout, flushed line by line even into a pipe: first
``Emulator listening on http://HOST:PORT``, then ``datastore <id> <name>`` per data store and
``image-set <id> datastore=<id>`` per seeded image set. Never a metadata value.
"""

from __future__ import annotations

import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server
from werkzeug.wsgi import LimitedStream

from .behaviours import BehaviourError, Behaviours
from .dicom_seed import SeedError, iter_seeds
from .entities import ImageSet
from .events import EventLog, Publisher
from .faults import FaultError, Faults
from .imports import default_s3_client
from .models import HealthImagingBackend, Settings
from .quotas import Quotas
from .responses import EmulatorApp
from .store import open_store


@dataclass
class ServeOptions:
    host: str = "127.0.0.1"
    port: int = 0
    data_dir: str | None = None
    seeds: list[str] = field(default_factory=list)
    quotas: str = "off"
    time_scale: float = 1.0
    update_delay: float = 0.5
    faults_file: str | None = None
    validation: str = "async"
    behaviours: dict[str, str] = field(default_factory=dict)
    s3_endpoint: str | None = None        # import jobs' S3 (None: boto3's default resolution)
    events_endpoint: str | None = None    # EventBridge for PutEvents (None: log only)
    region: str = "us-east-1"             # of the event bus, the events and the S3 client


# Seconds a kept-alive connection may stay idle before the server closes it (boto3 and the
# AWS CLI reopen one transparently).
IDLE_TIMEOUT = 120.0


class OptionsError(ValueError):
    """Options that cannot run an emulator (bad behaviour, faults file, seed path …)."""


@dataclass
class Emulator:
    """One assembled emulator, not yet bound to a socket."""

    backend: HealthImagingBackend
    faults: Faults
    quotas: Quotas
    app: EmulatorApp
    seeded: list[ImageSet]
    options: ServeOptions
    events: EventLog

    def close(self) -> None:
        if self.events.publisher:
            self.events.publisher.close()


class Ticker:
    """Completes due work in the background, so that completion events are published
    without a client polling (only with an events endpoint: otherwise completion stays lazy
    and exactly reproducible under a fake clock)."""

    def __init__(self, backend: HealthImagingBackend, interval: float = 0.05):
        self.backend = backend
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="emulator-ticker", daemon=True)

    def start(self) -> "Ticker":
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.backend.tick()
            except Exception:  # noqa: BLE001 - keep ticking; the next call reports the bug
                pass

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def build(options: ServeOptions, clock: Callable[[], float] | None = None) -> Emulator:
    if options.time_scale <= 0:
        raise OptionsError("time-scale must be > 0")
    if options.update_delay < 0:
        raise OptionsError("update-delay must be >= 0")
    if options.validation not in ("async", "sync"):
        raise OptionsError("validation must be async or sync")
    try:
        behaviours = Behaviours(options.behaviours)
        quotas = Quotas(options.quotas, options.time_scale, behaviours.write_burst,
                        clock=clock or time.monotonic)
        faults = Faults()
        if options.faults_file:
            faults.load_file(options.faults_file)
    except (BehaviourError, FaultError, OSError, ValueError) as exc:
        raise OptionsError(str(exc)) from None
    settings = Settings(options.update_delay, options.time_scale, options.validation, behaviours)
    publisher = Publisher(options.events_endpoint, options.region) \
        if options.events_endpoint else None
    events = EventLog(options.region, publisher)
    backend = HealthImagingBackend(settings, open_store(options.data_dir),
                                   clock=clock or time.time, events=events)
    backend.s3_client_factory = lambda: default_s3_client(options.s3_endpoint, options.region)
    seeded: list[ImageSet] = []

    def seed() -> None:
        backend.default_datastore()
        try:                    # one document at a time: parsed, stored compressed, dropped
            seeded[:] = backend.seed(iter_seeds(options.seeds,
                                                behaviours.instance_storage_keys == "on"))
        except SeedError as exc:
            raise OptionsError(str(exc)) from None

    def reset() -> None:
        backend.reset()
        seed()

    seed()
    app = EmulatorApp(backend, faults, quotas, on_reset=reset)
    return Emulator(backend, faults, quotas, app, seeded, options, events)


class _Handler(WSGIRequestHandler):
    """HTTP/1.1 with keep-alive on werkzeug's threaded server, and no per-request log lines
    (they would flood test output and stdout).

    werkzeug's own ``run_wsgi`` closes every connection (``Connection: close``, then it drains
    the socket), so each boto3 call paid a TCP connect and a new server thread. This one
    reads exactly the request body (``Content-Length``, or chunked), answers with a
    ``Content-Length`` on every response (the app's bodies are bytes, so the length is known)
    in a single write (no Nagle stall between headers and body), and keeps the connection for
    the client's next request: one thread per connection, not per request. A client that
    asks for ``Connection: close`` (or speaks HTTP/1.0 without keep-alive) gets it; an idle
    connection is closed after :data:`IDLE_TIMEOUT` seconds, and every open one when the
    server stops (:func:`_close`).
    """

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    timeout = IDLE_TIMEOUT

    def setup(self) -> None:
        super().setup()
        _connections(self.server).add(self.connection)

    def finish(self) -> None:
        _connections(self.server).discard(self.connection)
        super().finish()

    def log_request(self, *args: Any, **kwargs: Any) -> None:
        pass

    def log(self, type: str, message: str, *args: Any) -> None:  # noqa: A002
        if type == "error" and not message.startswith("Request timed out"):  # idle keep-alive
            sys.stderr.write(f"emulator: {message % args}\n")

    def run_wsgi(self) -> None:
        if getattr(self.server, "emulator_closing", False):
            self.close_connection = True
            return
        if self.headers.get("Expect", "").lower().strip(" \t") == "100-continue":
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        environ = self.make_environ()
        if not environ.get("wsgi.input_terminated"):          # not chunked
            try:
                length = int(environ.get("CONTENT_LENGTH") or 0)
            except ValueError:
                length = -1
            if length < 0:
                self.send_error(400, "Bad Content-Length")
                self.close_connection = True
                return
            environ["wsgi.input"] = LimitedStream(self.rfile, length)
            environ["wsgi.input_terminated"] = True
        started: list[Any] = []

        def start_response(status: str, headers: list[tuple[str, str]],
                           exc_info: Any = None) -> Callable[[bytes], None]:
            started[:] = [status, headers]
            return chunks.append

        chunks: list[bytes] = []
        try:
            result = self.server.app(environ, start_response)
            try:
                chunks.extend(result)
            finally:
                if hasattr(result, "close"):
                    result.close()
        except Exception as exc:  # noqa: BLE001 - answer 500 and keep serving
            self.log("error", "Error on request: %s", repr(exc))
            chunks[:] = [b"Internal Server Error"]
            started[:] = ["500 INTERNAL SERVER ERROR", [("Content-Type", "text/plain")]]
        stream = environ["wsgi.input"]
        if isinstance(stream, LimitedStream):
            try:                # what the app left unread of this request's body
                while stream.read(65536):
                    pass
            except Exception:  # noqa: BLE001 - a body we cannot finish ends the connection
                self.close_connection = True
        elif not getattr(stream, "_done", False):
            # A chunked body not read to its end (or malformed): where the next request
            # starts is unknown, so this connection ends with this answer.
            self.close_connection = True
        status, headers = started
        body = b"".join(chunks)
        code = int(status.split(None, 1)[0])
        lines = [f"{self.protocol_version} {status}", f"Server: {self.version_string()}",
                 f"Date: {self.date_time_string()}"]
        names = set()
        for key, value in headers:
            names.add(key.lower())
            lines.append(f"{key}: {value}")
        if "content-length" not in names and not (100 <= code < 200 or code in (204, 304)):
            lines.append(f"Content-Length: {len(body)}")
        if self.close_connection or getattr(self.server, "emulator_closing", False):
            self.close_connection = True
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        if environ["REQUEST_METHOD"] == "HEAD":
            body = b""
        self.wfile.write(head + body)


def _connections(server: BaseWSGIServer) -> set:
    conns = getattr(server, "emulator_connections", None)
    if conns is None:
        conns = server.emulator_connections = set()
    return conns


def _bind(emulator: Emulator) -> BaseWSGIServer:
    server = make_server(emulator.options.host, emulator.options.port, emulator.app,
                         threaded=True, request_handler=_Handler)
    server.emulator_closing = False
    server.emulator_connections = set()
    return server


def _close(server: BaseWSGIServer) -> None:
    """Stop accepting, then end every kept-alive connection: after stop(), no request is
    answered by this emulator (a client's pooled connection gets a clean close)."""
    server.emulator_closing = True
    server.shutdown()
    for conn in list(_connections(server)):
        try:
            conn.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
    server.server_close()


class ThreadedEmulator:
    """An emulator on a background thread, for tests (moto's ``ThreadedMotoServer`` shape).

    Keyword options mirror :class:`ServeOptions`; ``clock`` replaces ``time.time`` (and the
    quota clock) for deterministic tests. ``.backend``, ``.faults`` and ``.quotas`` give direct
    access; ``.datastore_id`` is the default data store, ``.image_set_ids`` the seeded sets.
    """

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, data_dir: str | None = None,
                 seeds: list[str] | tuple[str, ...] = (), quotas: str = "off",
                 time_scale: float = 1.0, update_delay: float = 0.0,
                 faults_file: str | None = None, validation: str = "async",
                 behaviours: dict[str, Any] | None = None,
                 clock: Callable[[], float] | None = None, s3_endpoint: str | None = None,
                 events_endpoint: str | None = None, region: str = "us-east-1"):
        self.options = ServeOptions(host, port, data_dir, [str(s) for s in seeds], quotas,
                                    time_scale, update_delay, faults_file, validation,
                                    {k: str(v).lower() if isinstance(v, bool) else str(v)
                                     for k, v in (behaviours or {}).items()},
                                    s3_endpoint=s3_endpoint, events_endpoint=events_endpoint,
                                    region=region)
        self._emulator = build(self.options, clock)
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._ticker: Ticker | None = None
        self.url: str | None = None

    backend = property(lambda self: self._emulator.backend)
    faults = property(lambda self: self._emulator.faults)
    quotas = property(lambda self: self._emulator.quotas)
    app = property(lambda self: self._emulator.app)
    events = property(lambda self: self._emulator.events)

    @property
    def datastore_id(self) -> str:
        return self.backend.default_datastore().datastore_id

    @property
    def image_set_ids(self) -> list[str]:
        return [s.image_set_id for s in self._emulator.seeded]

    def start(self) -> str:
        if self._server is None:
            self._server = _bind(self._emulator)
            self._thread = threading.Thread(target=self._server.serve_forever,
                                            kwargs={"poll_interval": 0.02},
                                            name="healthimaging-emulator", daemon=True)
            self._thread.start()
            self.url = f"http://{self.options.host}:{self._server.server_port}"
            if self.options.events_endpoint:
                self._ticker = Ticker(self.backend).start()
        return self.url

    def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.stop()
            self._ticker = None
        if self._server is not None:
            _close(self._server)
            if self._thread is not None:
                self._thread.join(timeout=5)
            self._server = self._thread = None
        self._emulator.close()

    def reset(self) -> None:
        """Back to the seeded state: data, faults and quota buckets (like POST /_emulator/reset)."""
        self.faults.clear()
        self.quotas.reset()
        self._emulator.app.on_reset()

    def __enter__(self) -> "ThreadedEmulator":
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def _say(line: str) -> None:
    print(line, flush=True)


def serve(options: ServeOptions) -> None:
    """Run until SIGINT or SIGTERM, then return (exit status 0)."""
    try:
        emulator = build(options)
    except OptionsError as exc:
        print(f"Error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None
    # Handlers first: a client may signal as soon as it has read the first line.
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set())
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server = _bind(emulator)
    except OSError as exc:
        print(f"Error: cannot listen on {options.host}:{options.port}: {exc}", file=sys.stderr,
              flush=True)
        raise SystemExit(1) from None
    _say(f"Emulator listening on http://{options.host}:{server.server_port}")
    for ds in sorted(emulator.backend.datastores.values(), key=lambda d: d.created_at):
        _say(f"datastore {ds.datastore_id} {ds.name}")
    for image_set in emulator.seeded:
        _say(f"image-set {image_set.image_set_id} datastore={image_set.datastore_id}")
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                              daemon=True)
    thread.start()
    ticker = Ticker(emulator.backend).start() if options.events_endpoint else None
    try:
        while not stop.wait(0.5):
            pass
    finally:
        if ticker:
            ticker.stop()
        _close(server)
        emulator.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
