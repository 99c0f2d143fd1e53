"""HealthImaging's rest-json wire protocol, driven entirely by the botocore service model.

Nothing about an individual operation is typed here: routes come from each operation's
``http.method`` + ``requestUri``, inputs are parsed and validated from the input shape
(``location: uri | querystring | header``, the rest from the JSON body or the payload member),
outputs are serialised from the output shape, and error statuses come from the error shapes.
botocore validates neither ``pattern`` nor blob lengths client-side, so the checks below are
what stands between a malformed request and the backend, as on the real service.

Outputs are checked against the model as strictly as inputs: a key the model does not know, a
missing required member or a ``message`` outside its pattern is an emulator bug and surfaces
as a 500, so the test suite catches it instead of boto3 silently dropping the value.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from typing import Any, Mapping
from urllib.parse import unquote

import botocore.session
from botocore.model import OperationModel, ServiceModel

from .shapes import (
    Errors, OutputError, ServiceError, check, from_json, from_text, raise_if, to_json,
    unknown_members, validation)

__all__ = ["ServiceError", "OutputError", "validation", "service_model", "routes",
           "match_route", "parse_request", "serialise_response", "serialise_error",
           "operation_errors", "error_status", "region_from_authorization"]

SERVICE_NAME = "medical-imaging"


@cache
def service_model() -> ServiceModel:
    return botocore.session.get_session().get_service_model(SERVICE_NAME)


def error_status(code: str) -> int:
    """HTTP status of an error shape (``error.httpStatusCode``), 500 for unknown codes."""
    try:
        shape = service_model().shape_for(code)
    except Exception:  # noqa: BLE001 - botocore raises NoShapeFoundError
        return 500
    return int(shape.metadata.get("error", {}).get("httpStatusCode", 500))


def operation_errors(op: OperationModel) -> frozenset[str]:
    return frozenset(shape.name for shape in op.error_shapes)


# ---------------------------------------------------------------------------------- routing
@dataclass(frozen=True)
class Route:
    operation: OperationModel
    method: str
    regex: re.Pattern[str]


@cache
def routes() -> tuple[Route, ...]:
    model = service_model()
    out = []
    for name in model.operation_names:
        op = model.operation_model(name)
        path = op.http["requestUri"].split("?", 1)[0]
        pattern = ""
        for part in re.split(r"(\{[^}]+\})", path):
            if part.startswith("{"):
                label = part[1:-1]
                greedy = label.endswith("+")
                label = label.rstrip("+")
                pattern += f"(?P<{label}>{'.+' if greedy else '[^/]+'})"
            else:
                pattern += re.escape(part)
        out.append(Route(op, op.http["method"].upper(), re.compile(pattern + "/?")))
    # Literal paths before templated ones of the same length keeps matching unambiguous.
    return tuple(sorted(out, key=lambda r: -len(r.regex.pattern)))


def match_route(method: str, raw_path: str) -> tuple[OperationModel, dict[str, str]]:
    """Find the operation for ``method`` and the raw (still percent-encoded) ``raw_path``.

    Labels are matched on the encoded path, so a percent-encoded ARN (``%2F`` inside) stays
    one label, and are percent-decoded afterwards.
    """
    path_matched = False
    for route in routes():
        m = route.regex.fullmatch(raw_path)
        if not m:
            continue
        path_matched = True
        if route.method == method:
            return route.operation, {k: unquote(v) for k, v in m.groupdict().items()}
    if path_matched:
        raise ServiceError("UnknownOperationException",
                           f"{method} is not allowed on {raw_path.split('?')[0]}")
    raise ServiceError("UnknownOperationException", f"no operation matches {method} {raw_path}")


def parse_request(op: OperationModel, labels: Mapping[str, str], query: Any,
                  headers: Mapping[str, str], body: bytes) -> dict[str, Any]:
    """Build the operation's input parameters from the HTTP request and validate them.

    ``query`` is a werkzeug ``MultiDict`` (``getlist`` for list members). Raises
    :class:`ServiceError` ``ValidationException`` listing every violation.
    """
    shape = op.input_shape
    errors = Errors()
    params: dict[str, Any] = {}
    if shape is None:
        return params
    payload_name = shape.serialization.get("payload")
    body_members = {}
    for name, member in shape.members.items():
        loc = member.serialization.get("location")
        wire = member.serialization.get("name", name)
        if loc == "uri":
            if wire in labels:
                params[name] = labels[wire]
        elif loc == "querystring":
            if member.type_name == "list":
                values = query.getlist(wire)
                if values:
                    params[name] = [from_text(member.member, v, name, errors) for v in values]
            elif wire in query:
                params[name] = from_text(member, query[wire], name, errors)
        elif loc == "header":
            if wire in headers:
                params[name] = from_text(member, headers[wire], name, errors)
        elif name != payload_name:
            body_members[name] = member
    if payload_name:
        member = shape.members[payload_name]
        if member.type_name == "blob":
            if body:
                params[payload_name] = body
        elif body.strip():
            params[payload_name] = from_json(member, _json_body(body), payload_name, errors)
    elif body_members and body.strip():
        document = _json_body(body)
        if not isinstance(document, dict):
            raise validation("The request body must be a JSON object")
        for name, member in body_members.items():
            wire = member.serialization.get("name", name)
            if wire in document:
                params[name] = from_json(member, document[wire], name, errors)
        unknown_members(document, {m.serialization.get("name", n)
                                   for n, m in body_members.items()}, "", errors)
    raise_if(errors)
    check(shape, params, "", errors)
    raise_if(errors)
    return params


def _json_body(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise validation("Could not parse the request body as JSON") from None


def serialise_response(op: OperationModel, result: dict[str, Any]
                       ) -> tuple[int, list[tuple[str, str]], bytes]:
    """(status, headers, body) for a successful call, checked against the output shape."""
    shape = op.output_shape
    status = int(op.http.get("responseCode", 200))
    if shape is None:
        return status, [("Content-Type", "application/json")], b"{}"
    errors = Errors()
    check(shape, {k: v for k, v in result.items() if v is not None}, "", errors)
    if errors:
        raise OutputError("; ".join(errors))
    headers: list[tuple[str, str]] = []
    payload_name = shape.serialization.get("payload")
    document: dict[str, Any] = {}
    body: bytes | None = None
    for name, member in shape.members.items():
        value = result.get(name)
        if value is None:
            continue
        loc = member.serialization.get("location")
        if loc == "header":
            headers.append((member.serialization.get("name", name), str(value)))
        elif name == payload_name:
            if member.type_name == "blob":
                body = bytes(value)
            else:
                body = json.dumps(to_json(member, value, name)).encode()
        else:
            document[name] = value
    unknown = set(result) - set(shape.members)
    if unknown:
        raise OutputError(f"keys not in the model: {sorted(unknown)}")
    if body is None:
        body = json.dumps(to_json(shape, document, "")).encode()
    if not any(h.lower() == "content-type" for h, _ in headers):
        headers.append(("Content-Type", "application/json"))
    return status, headers, body


def serialise_error(code: str, message: str) -> tuple[int, list[tuple[str, str]], bytes]:
    """The error wire form botocore maps to ``client.exceptions.<code>``."""
    headers = [("Content-Type", "application/json"), ("x-amzn-ErrorType", code)]
    return error_status(code), headers, json.dumps({"message": message}).encode()


def region_from_authorization(header: str | None, default: str = "us-east-1") -> str:
    """The region of a SigV4 credential scope (``Credential=AKID/date/REGION/service/...``)."""
    if header:
        m = re.search(r"Credential=[^/]+/\d{8}/([a-z0-9-]+)/", header)
        if m:
            return m.group(1)
    return default
