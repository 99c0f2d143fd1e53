"""The keys of one state: a chain of data keys, sealed in the state by its key source.

A keyed state (format 2) hashes the value at one attribute of one image set as

    h0 = sha256(salt + canonical JSON of the value)      (what a format-1 state stored)
    hi = HMAC-SHA256(Ki, "<image set id>/<name>:" + h(i-1))   for each data key K1 … Kn

(``name``: the attribute's keyword, or ``Series`` / ``Instances`` for a presence), so equal
values of different image sets or attributes hash apart: the state does not even tell which
image sets share a birth date or a patient. With subkeys of their own (HKDF, one purpose
each) it keys, alike, the spec digest a record keeps and the Series and SOP Instance UIDs of
attribute paths: ``Series[1.2.3].Instances[1.2.3.4].X``
is stored as ``Series[#<token>].Instances[#<token>].X``, a token being the first 128 bits of
the same HMAC chain over the UID. The salt stays (it is h0's); the secret is the chain, which
the state stores only sealed (:func:`reconciler.states.keys.seal`, context: purpose and
lineage) under its key source.

**Why a chain.** A new key needs a new hash of every recorded value, and the state keeps no
value, by design. One more HMAC layer needs only the stored hash: adding a key K(n+1) maps
every stored h_n to HMAC(K(n+1), h_n), which is exactly what the chain computes for the value.
So a format-1 state (a chain of length 0) is re-keyed as it is read, and ``state rekey``
rotates, without reading a value, a version or HealthImaging at all, and without losing a
record, a pending write or a refusal. After a rotation a guess can be tested only with every
key of the chain, the newest included, and all of them are sealed under the (possibly new)
key source: whoever held the old key and a new state learns nothing new. Re-hashing from the
live metadata instead would need read access, a call per record, and the values of deleted
image sets; it would also turn values changed behind our back into the recorded ones.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from ..core.errors import StateError
from ..dicom.paths import instance_path, parse, series_path
from .keys import KEY_BYTES, KeySource, SealError, derive, key_source, seal, unseal, wrapped_by
from .records import ImageSetRecord, Refusal

VALUE, UID, SPEC, REDACT = "state/value", "state/uid", "state/spec-digest", "output/redact"
TOKEN_PREFIX = "#"
TOKEN_HEX = 32
_TOKEN_CACHE = 200_000        # tokens of UIDs remembered per chain (drift resolves many)


class KeyChain:
    """Data keys, oldest first. Immutable; :meth:`extended` makes the next one."""

    def __init__(self, keys: tuple[bytes, ...] = ()):
        self.keys = keys
        self._sub = {purpose: [derive(k, purpose) for k in keys]
                     for purpose in (VALUE, UID, SPEC)}
        self._tokens: dict[str, str] = {}

    @classmethod
    def parse(cls, data: bytes) -> KeyChain:
        if not data or len(data) % KEY_BYTES:
            raise ValueError("not a key chain")
        return cls(tuple(data[i:i + KEY_BYTES] for i in range(0, len(data), KEY_BYTES)))

    def to_bytes(self) -> bytes:
        return b"".join(self.keys)

    def extended(self) -> KeyChain:
        return KeyChain((*self.keys, secrets.token_bytes(KEY_BYTES)))

    @property
    def generation(self) -> int:
        return len(self.keys)

    @property
    def id(self) -> str:
        """A public, one-way id of the newest key (messages, ``state show``)."""
        return derive(self.keys[-1], "chain/id")[:8].hex() if self.keys else "none"

    def layer(self, purpose: str, text: str, start: int = 0, bind: str = "") -> str:
        """``text`` through the HMAC layers of keys ``start`` … n (hex; truncated for UIDs),
        each over ``bind`` + ``text``."""
        for sub in self._sub[purpose][start:]:
            text = hmac.new(sub, (bind + text).encode("utf-8"), hashlib.sha256).hexdigest()
            if purpose == UID:
                text = text[:TOKEN_HEX]
        return text

    def token(self, uid: str, start: int = 0) -> str:
        """The stored form of a UID (at generation 0: the UID itself); a token gets the
        layers from ``start`` on top of what it already has."""
        if not self.keys:
            return uid
        if start == 0 and uid in self._tokens:
            return self._tokens[uid]
        plain = uid[len(TOKEN_PREFIX):] if uid.startswith(TOKEN_PREFIX) else uid
        token = TOKEN_PREFIX + self.layer(UID, plain, start)
        if start == 0:
            if len(self._tokens) >= _TOKEN_CACHE:
                self._tokens.clear()
            self._tokens[uid] = token
        return token

    def redaction_key(self) -> bytes:
        """The key of redacted output's short hashes (not chained: never stored)."""
        return derive(self.keys[-1], REDACT)


# -- attribute paths ---------------------------------------------------------------------------
def binding(image_set_id: str, path: str) -> str:
    """What a hash is bound to: the image set and the attribute's name (not its UIDs, which
    are tokens that change with each key)."""
    parts = parse(path)
    name = parts.key or ("Instances" if parts.instance is not None else "Series")
    return f"{image_set_id}/{name}:"


def map_uids(path: str, convert: Callable[[str], str]) -> str:
    parts = parse(path)
    if parts.series is None:
        return path
    series = convert(parts.series)
    if parts.instance is None:
        return series_path(series, parts.key)
    return instance_path(series, convert(parts.instance), parts.key)


def has_token(path: str) -> bool:
    return f"[{TOKEN_PREFIX}" in path


def stored_path(path: str, chain: KeyChain) -> str:
    """A managed path as the state stores it (tokens stay as they are)."""
    if "[" not in path:
        return path
    return map_uids(path, lambda uid: uid if uid.startswith(TOKEN_PREFIX) else chain.token(uid))


def resolve(paths: list[str], uids: set[str], chain: KeyChain) -> dict[str, str]:
    """Stored path → the path with real UIDs, for every token one of ``uids`` gives (the
    others stay tokens: a series or instance not in the live document, so absent)."""
    if not any(has_token(p) for p in paths):
        return {p: p for p in paths}
    table = {chain.token(uid): uid for uid in uids}
    return {p: map_uids(p, lambda part: table.get(part, part)) if has_token(p) else p
            for p in paths}


# -- one more layer over what a state holds ----------------------------------------------------
def relayer_record(record: ImageSetRecord, chain: KeyChain, start: int) -> ImageSetRecord:
    """``record`` with the layers of keys ``start`` … n added (its serial is kept: a re-key
    is not an operation on the image set)."""
    hashes = {map_uids(p, lambda uid: chain.token(uid, start)) if "[" in p else p:
              chain.layer(VALUE, h, start, binding(record.image_set_id, p))
              for p, h in record.hashes.items()}
    return replace(record, hashes=hashes, spec_digest=chain.layer(SPEC, record.spec_digest, start))


def relayer_refusal(refusal: Refusal, image_set_id: str, chain: KeyChain, start: int) -> Refusal:
    return replace(refusal, request=chain.layer(VALUE, refusal.request, start,
                                                request_binding(image_set_id)))


def request_binding(image_set_id: str) -> str:
    return f"{image_set_id}/request:"


class StateKeys:
    """What one state knows of its keys: the sealed chain as stored (``envelope``; None for a
    state never sealed: new, or format 1), the source that opens it, and, once opened, the
    chain. ``where`` names the state in messages."""

    def __init__(self, lineage: str, where: str, source: KeySource | None,
                 envelope: Mapping[str, Any] | None):
        self._lineage, self.where = lineage, where
        self._source = source
        self.envelope = dict(envelope) if envelope is not None else None
        self.chain: KeyChain | None = None

    @property
    def source(self) -> KeySource:
        if self._source is None:
            self._source = key_source(None)      # the default: the user's key file
        return self._source

    def context(self) -> dict[str, str]:
        return {"reconciler:purpose": "state-keys", "reconciler:lineage": self._lineage}

    def open(self) -> KeyChain:
        assert self.envelope is not None
        what = f"the state {self.where}"
        try:
            chain = KeyChain.parse(unseal(self.source, self.envelope, self.context(), what))
        except (SealError, ValueError):
            raise StateError(f"{what}: its keys do not open: the keys section was modified, or "
                             f"copied from another state (the previous snapshot may be in its "
                             f"backup)") from None
        if (chain.generation, chain.id) != (self.envelope.get("generation"),
                                            self.envelope.get("id")):
            raise StateError(f"{what}: its keys section does not match the keys it holds")
        self.chain = chain
        return chain

    def seal(self, chain: KeyChain, source: KeySource | None = None) -> None:
        """Seal ``chain`` under ``source`` (default: the current one); it becomes the chain."""
        if source is not None:
            self._source = source
        self.envelope = seal(self.source, chain.to_bytes(), self.context(),
                             {"generation": chain.generation, "id": chain.id})
        self.chain = chain

    def describe(self) -> str:
        """Generation, id and what wraps it (for ``state rekey`` and notices)."""
        if self.envelope is None:
            return "salted hashes, not keyed (format 1)"
        return (f"key generation {self.envelope['generation']} (id {self.envelope['id']}), "
                f"sealed with {wrapped_by(self.envelope['data_key'])}")
