"""Canonical JSON and its sha256: the one form every digest in reconciler is taken over.

Compact separators, sorted keys, UTF-8 (non-ASCII kept), no NaN. Plan checksums, spec digests,
before-digests, the inner hash of the state's keyed hashes, what the redactor's short hashes
are taken over and the text a refused request is remembered by all use it, so equal values
give equal digests everywhere, and a change of form could only ever be made here (it would
change every stored digest).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any


def canonical_text(value: Any) -> str:
    """Raises TypeError/ValueError (without the value) for input that is not JSON."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)


def canonical_bytes(value: Any) -> bytes:
    return canonical_text(value).encode("utf-8")


def digest(value: Any, salt: bytes = b"") -> str:
    """sha256 hex of ``salt`` + the canonical bytes of ``value``."""
    return hashlib.sha256(salt + canonical_bytes(value)).hexdigest()
