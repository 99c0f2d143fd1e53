"""Opaque ``nextToken`` pagination shared by every List/Search operation.

A token encodes the offset of the next page and a fingerprint of the query that produced it,
so a token replayed with different criteria (or garbage) is a ValidationException, as on AWS,
rather than a silently wrong page. Offsets are taken over a stable order (each caller sorts
with a unique tie-breaker), which keeps pages disjoint while nothing is inserted.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any, Sequence, TypeVar

from .protocol import validation

T = TypeVar("T")


def fingerprint(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def paginate(items: Sequence[T], max_results: int | None, next_token: str | None,
             query: str, default_size: int) -> tuple[list[T], str | None]:
    size = max_results or default_size
    offset = 0
    if next_token:
        try:
            data = json.loads(base64.urlsafe_b64decode(next_token.encode("ascii")))
            offset, token_query = int(data["o"]), data["q"]
        except (ValueError, KeyError, TypeError, UnicodeEncodeError):
            raise validation("Invalid nextToken") from None
        if token_query != query or offset < 0:
            raise validation("The nextToken does not belong to this request")
    page = list(items[offset:offset + size])
    more = offset + size < len(items)
    token = None
    if more:
        raw = json.dumps({"o": offset + size, "q": query}).encode()
        token = base64.urlsafe_b64encode(raw).decode("ascii")
    return page, token
