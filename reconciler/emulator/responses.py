"""The thin HTTP layer: a werkzeug WSGI app that parses, calls the backend, serialises.

moto's ``responses.py`` shape. Per request: route on the raw, still percent-encoded path →
fault directives → quota → parse and validate from the model → ``backend.<operation>`` →
serialise from the model. Two rules about errors:

* only errors the operation's model lists are answered (a ServiceError the model does not
  allow for that operation is an emulator bug and becomes InternalServerException);
* nothing is logged but operation names, statuses and error codes — never a request or
  response body, which may hold patient data.

Admin endpoints live under ``/_emulator/`` (no model route starts with an underscore):
``GET|POST|DELETE /_emulator/faults``, ``DELETE /_emulator/faults/<id>``,
``POST /_emulator/reset``, ``POST /_emulator/complete``, ``GET /_emulator/health``,
``GET /_emulator/behaviours``, ``GET|DELETE /_emulator/events``.
"""

from __future__ import annotations

import json
import logging
import random
import time
import uuid
from typing import Any, Callable
from urllib.parse import quote

from botocore import xform_name
from werkzeug.wrappers import Request, Response

from .faults import FaultError, Faults, malform
from .models import Call, HealthImagingBackend
from .protocol import (
    OutputError, ServiceError, match_route, operation_errors, parse_request,
    region_from_authorization, serialise_error, serialise_response)
from .quotas import Quotas

log = logging.getLogger("reconciler.emulator")
ADMIN_PREFIX = "/_emulator"


def raw_path_of(environ: dict[str, Any]) -> str:
    """The request path exactly as sent (percent-encoding intact), without the query."""
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if not raw:
        raw = quote(environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", ""))
    if "://" in raw:                      # absolute-form request target
        raw = "/" + raw.split("://", 1)[1].partition("/")[2]
    return raw.split("?", 1)[0]


class EmulatorApp:
    def __init__(self, backend: HealthImagingBackend, faults: Faults, quotas: Quotas,
                 on_reset: Callable[[], None] | None = None):
        self.backend = backend
        self.faults = faults
        self.quotas = quotas
        self.on_reset = on_reset

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> Any:
        request = Request(environ)
        path = raw_path_of(environ)
        if path == ADMIN_PREFIX or path.startswith(ADMIN_PREFIX + "/"):
            response = self.admin(request, path[len(ADMIN_PREFIX):])
        else:
            response = self.service(request, path)
        # A random (version 4) UUID without a getrandom() call per request: it only has to be
        # unique enough to tell requests apart in a client's logs.
        response.headers["x-amzn-RequestId"] = str(uuid.UUID(int=random.getrandbits(128),
                                                             version=4))
        return response(environ, start_response)

    # ---------------------------------------------------------------------- the service
    def service(self, request: Request, path: str) -> Response:
        try:
            op, labels = match_route(request.method, path)
        except ServiceError as exc:
            status, headers, body = serialise_error(exc.code, exc.message)
            return Response(body, 404, headers)
        name = op.name
        allowed = operation_errors(op)
        directives = None
        committed = False
        try:
            directives = self.faults.directives(name, labels)
            if directives.latency:
                time.sleep(directives.latency)
            if not self.quotas.allow(name):
                raise ServiceError("ThrottlingException", "Rate exceeded")
            params = parse_request(op, labels, request.args, request.headers,
                                   request.get_data(cache=False))
            if directives.error_before:
                raise ServiceError(*directives.error_before)
            call = Call(region_from_authorization(request.headers.get("Authorization")),
                        directives)
            result = getattr(self.backend, xform_name(name))(params, call)
            committed = True
            if directives.error_after:
                raise ServiceError(*directives.error_after)
            status, headers, body = serialise_response(op, result)
            if directives.malformed:
                body = malform(body, directives.malformed)
        except ServiceError as exc:
            if directives is not None and not committed:
                self.faults.refund(directives)
            code, message = exc.code, exc.message
            if code not in allowed:
                log.error("emulator bug: %s may not raise %s", name, code)
                code, message = "InternalServerException", f"emulator error ({exc.code})"
            log.debug("%s -> %s", name, code)
            status, headers, body = serialise_error(code, message)
        except OutputError as exc:
            log.error("emulator bug: %s produced an output its model rejects: %s", name,
                      exc.args[0][:300] if exc.args else "")
            status, headers, body = serialise_error("InternalServerException",
                                                    "emulator error: invalid output")
        except Exception:  # noqa: BLE001 - a bug must answer 500, not kill the thread
            log.exception("emulator bug while handling %s", name)
            status, headers, body = serialise_error("InternalServerException", "emulator error")
        else:
            log.debug("%s -> %s", name, status)
        response = Response(body, status, headers)
        response.direct_passthrough = True   # the gzip metadata blob goes out byte for byte
        return response

    # ------------------------------------------------------------------------- admin
    def admin(self, request: Request, sub: str) -> Response:
        try:
            if sub.rstrip("/") == "/events":
                body = self._events(request)
            else:
                body = self._admin(request.method, sub.rstrip("/") or "/", request.get_data())
        except (FaultError, ValueError) as exc:
            return _json({"message": str(exc)}, 400)
        if body is None:
            return _json({"message": f"no admin endpoint {request.method} {sub}"}, 404)
        return _json(body, 200)

    def _events(self, request: Request) -> Any:
        """GET: the events sent (oldest first; ``?detailType=`` filters, ``?flush=true`` first
        waits for pending deliveries); DELETE: forget them."""
        events = self.backend.events
        if request.method == "DELETE":
            events.clear()
            return {"events": []}
        if request.method != "GET":
            return None
        if request.args.get("flush") == "true":
            events.flush()
        return {"region": events.region,
                "endpoint": events.publisher.endpoint_url if events.publisher else None,
                "events": events.records(request.args.get("detailType"))}

    def _admin(self, method: str, sub: str, data: bytes) -> Any:
        if sub == "/health" and method == "GET":
            return {"status": "ok"}
        if sub == "/behaviours" and method == "GET":
            return {"behaviours": self.backend.behaviours.as_dict(),
                    "validation": self.backend.settings.validation,
                    "updateDelay": self.backend.settings.update_delay,
                    "timeScale": self.backend.settings.time_scale,
                    "quotas": self.quotas.mode}
        if sub == "/faults":
            if method == "GET":
                return {"faults": self.faults.list()}
            if method == "DELETE":
                self.faults.clear()
                return {"faults": []}
            if method == "POST":
                raw = json.loads(data or b"null")
                rules = raw.get("faults") if isinstance(raw, dict) and "faults" in raw else raw
                rules = rules if isinstance(rules, list) else [rules]
                return {"faults": [r.as_dict() for r in self.faults.add_many(rules)]}
        if sub.startswith("/faults/") and method == "DELETE":
            if self.faults.remove(int(sub.rsplit("/", 1)[1])):
                return {"faults": self.faults.list()}
            return None
        if sub == "/reset" and method == "POST":
            self.faults.clear()
            self.quotas.reset()
            if self.on_reset:
                self.on_reset()
            return {"status": "reset"}
        if sub == "/complete" and method == "POST":
            self.backend.complete_pending()
            return {"status": "completed"}
        return None


def _json(body: Any, status: int) -> Response:
    return Response(json.dumps(body), status, {"Content-Type": "application/json"})
