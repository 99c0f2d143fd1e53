"""Fault injection: rules that make chosen calls slow, fail, conflict, throttle or stay LOCKED.

A rule targets an operation (or ``*``), optionally one image set (``imageSetId``, matched
against the request's ``imageSetId`` / ``sourceImageSetId``) or data store, and fires at most
``times`` times (absent / null: every time); the after-commit actions (``error_after``,
``update_failed``, ``lock``) count only calls whose write was accepted. Actions:

=================  =========================================================================
``latency``        sleep ``seconds`` before handling the call
``error``          answer ``code`` (default InternalServerException, 500) *before* doing
                   anything (``status`` is taken from the model's error shape)
``error_after``    do the call, commit it, then answer ``code`` (default 500): the retry
                   hazard — botocore retries and the retry meets a 409
``conflict``       answer ConflictException before doing anything
``throttle``       answer ThrottlingException (429); with ``times: n`` the next n calls
``update_failed``  accept the write but end it ``UPDATE_FAILED`` with ``message``
``lock``           keep the accepted write LOCKED for ``polls`` more GetImageSet calls
                   and/or ``seconds`` longer
``malformed``      do the call, then answer 200 with a body the client cannot parse:
                   ``form`` ``truncated`` (default: the body cut in half; for the gzip
                   metadata blob of GetImageSetMetadata a truncated gzip stream) or
                   ``invalid_json`` (the metadata blob: valid gzip of half its JSON text;
                   a JSON body: cut in half, as ``truncated``)
=================  =========================================================================

Rules come from ``--faults FILE`` (JSON or YAML: a list of rules, or ``{"faults": [...]}``),
from ``POST /_emulator/faults`` at run time, or from :meth:`Faults.add` in Python.
"""

from __future__ import annotations

import gzip
import itertools
import json
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

ACTIONS = ("latency", "error", "error_after", "conflict", "throttle", "update_failed", "lock",
           "malformed")
MALFORMED_FORMS = ("truncated", "invalid_json")
_FIELDS = {"operation", "action", "imageSetId", "datastoreId", "times", "seconds", "code",
           "message", "polls", "form", "id"}


class FaultError(ValueError):
    """A rule that cannot be understood."""


@dataclass
class Rule:
    operation: str
    action: str
    imageSetId: str | None = None
    datastoreId: str | None = None
    times: int | None = None          # None: unlimited
    seconds: float | None = None
    code: str | None = None
    message: str | None = None
    polls: int | None = None
    form: str | None = None           # malformed: one of MALFORMED_FORMS
    id: int = 0
    fired: int = field(default=0)

    def matches(self, operation: str, labels: dict[str, str]) -> bool:
        if self.operation not in ("*", operation):
            return False
        image_set = labels.get("imageSetId") or labels.get("sourceImageSetId")
        if self.imageSetId and self.imageSetId != image_set:
            return False
        if self.datastoreId and self.datastoreId != labels.get("datastoreId"):
            return False
        return self.times is None or self.fired < self.times

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


def parse_rule(raw: dict[str, Any]) -> Rule:
    if not isinstance(raw, dict):
        raise FaultError("a fault rule must be an object")
    unknown = set(raw) - _FIELDS
    if unknown:
        raise FaultError(f"unknown fault rule fields: {', '.join(sorted(unknown))}")
    if raw.get("action") not in ACTIONS:
        raise FaultError(f"fault action must be one of {', '.join(ACTIONS)}")
    if not isinstance(raw.get("operation"), str):
        raise FaultError("a fault rule needs an operation (or '*')")
    if raw.get("times") is not None and (not isinstance(raw["times"], int) or raw["times"] < 1):
        raise FaultError("times must be a positive integer")
    if raw["action"] == "latency" and not isinstance(raw.get("seconds"), (int, float)):
        raise FaultError("latency needs seconds")
    if raw["action"] == "lock" and raw.get("polls") is None and raw.get("seconds") is None:
        raise FaultError("lock needs polls and/or seconds")
    if raw["action"] == "malformed" and raw.get("form", "truncated") not in MALFORMED_FORMS:
        raise FaultError(f"malformed form must be one of {', '.join(MALFORMED_FORMS)}")
    return Rule(**{k: v for k, v in raw.items() if k != "id"})


def load_rules(text: str) -> list[dict[str, Any]]:
    data = yaml.safe_load(text)   # YAML is a superset of JSON: one parser for both formats
    if isinstance(data, dict):
        data = data.get("faults", [])
    if data is None:
        return []
    if not isinstance(data, list):
        raise FaultError("the faults document must be a list of rules or {faults: [...]}")
    return data


@dataclass
class Directives:
    """What the matching rules ask of one call."""

    latency: float = 0.0
    error_before: tuple[str, str] | None = None
    error_after: tuple[str, str] | None = None
    update_failed: str | None = None
    lock_polls: int = 0
    lock_seconds: float = 0.0
    malformed: str | None = None      # a form of MALFORMED_FORMS: garble the success body
    # Rules whose effect needs the write to be accepted (error_after, update_failed, lock):
    # refunded when the call fails before committing, so "once" means once it took effect.
    after_commit: list[Rule] = field(default_factory=list)


class Faults:
    def __init__(self) -> None:
        self._rules: list[Rule] = []
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def add(self, operation: str = "*", action: str = "error", **fields: Any) -> Rule:
        rule = parse_rule(dict(fields, operation=operation, action=action))
        with self._lock:
            rule.id = next(self._ids)
            self._rules.append(rule)
        return rule

    def add_many(self, raws: list[dict[str, Any]]) -> list[Rule]:
        for raw in raws:                              # all or nothing
            parse_rule(raw)
        return [self.add(**{k: v for k, v in raw.items() if k != "id"}) for raw in raws]

    def load_file(self, path: str) -> list[Rule]:
        return self.add_many(load_rules(Path(path).read_text("utf-8")))

    def remove(self, rule_id: int) -> bool:
        with self._lock:
            before = len(self._rules)
            self._rules = [r for r in self._rules if r.id != rule_id]
            return len(self._rules) != before

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def list(self) -> list[dict[str, Any]]:
        with self._lock:
            self._rules = [r for r in self._rules if r.times is None or r.fired < r.times]
            return [r.as_dict() for r in self._rules]

    def directives(self, operation: str, labels: dict[str, str]) -> Directives:
        """Consume the rules that match this call and say what they ask."""
        d = Directives()
        with self._lock:
            for rule in self._rules:
                if not rule.matches(operation, labels):
                    continue
                rule.fired += 1
                a = rule.action
                if a == "latency":
                    d.latency += float(rule.seconds or 0)
                elif a in ("error", "conflict", "throttle") and d.error_before is None:
                    default = {"error": "InternalServerException", "conflict": "ConflictException",
                               "throttle": "ThrottlingException"}[a]
                    code = rule.code if a == "error" and rule.code else default
                    d.error_before = (code, rule.message or f"Injected fault: {code}")
                elif a == "error_after" and d.error_after is None:
                    code = rule.code or "InternalServerException"
                    d.error_after = (code, rule.message or f"Injected fault after commit: {code}")
                    d.after_commit.append(rule)
                elif a == "update_failed":
                    d.update_failed = rule.message or "INVALID_REQUEST: injected failure"
                    d.after_commit.append(rule)
                elif a == "lock":
                    d.lock_polls += int(rule.polls or 0)
                    d.lock_seconds += float(rule.seconds or 0)
                    d.after_commit.append(rule)
                elif a == "malformed" and d.malformed is None:
                    d.malformed = rule.form or "truncated"
        return d

    def refund(self, directives: Directives) -> None:
        """The call failed before committing: its after-commit rules did not take effect."""
        with self._lock:
            for rule in directives.after_commit:
                rule.fired -= 1
            directives.after_commit.clear()


def malform(body: bytes, form: str) -> bytes:
    """A successful response body made unparseable (the ``malformed`` action). A gzip body
    (the metadata blob) is cut as gzip (``truncated``) or re-compressed around half its JSON
    text (``invalid_json``); any other body is cut in half."""
    if body[:2] == b"\x1f\x8b" and form == "invalid_json":
        text = gzip.decompress(body)
        return gzip.compress(text[:len(text) // 2], mtime=0)
    return body[:len(body) // 2]


def dump(rules: list[dict[str, Any]]) -> str:
    return json.dumps({"faults": rules})
