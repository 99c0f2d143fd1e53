"""How a state hashes: with its keys (:mod:`.keychain`), opened from its key source on first use.

A mixin of :class:`~.document.State`, apart so that the document stays about records and their
serialisation. It uses the state's ``_lock``, ``_keys`` (a :class:`~.keychain.StateKeys`),
``_legacy`` (read as format 1 and not re-keyed yet), ``_salt_bytes``, ``_specs``,
``_refusals``, ``_check_all``, ``_whole`` and ``_changes``.
"""

from __future__ import annotations

import logging
import secrets
from typing import Any, Mapping

from ..core.canonical import digest
from .keychain import (
    SPEC, VALUE, KeyChain, binding, relayer_record, relayer_refusal, request_binding, resolve,
    stored_path)
from .keys import KeySource
from .records import ImageSetRecord

log = logging.getLogger(__name__)


class Hashing:
    # -- keys ------------------------------------------------------------------------------
    def open_keys(self) -> KeyChain:
        """Open the state's keys now (the first hash would anyway): unseal them with the key
        source, draw them for a new state, or re-key a format-1 state. Call before reading
        records when they will be compared: a run that needs the key fails here, before it
        can judge anything in sync. Raises KeyUnavailableError naming the source."""
        with self._lock:
            if self._keys.chain is not None:
                return self._keys.chain
            if self._keys.envelope is not None:
                return self._keys.open()
            if not self._legacy:
                self._keys.seal(KeyChain().extended())
                return self._keys.chain
            self._rekey(KeyChain(), None)
            self._legacy = False
            log.warning("%s holds salted hashes that are not keyed (state format 1): re-keyed "
                        "them with %s; this run's next write of the state saves them",
                        self._keys.where, self._keys.source.describe())
            return self._keys.chain

    def rekey(self, source: KeySource | None = None) -> tuple[str, str]:
        """Rotate: open the keys, add a new data key to the chain (one HMAC layer over every
        stored hash, UID token and spec digest), and seal the chain under ``source`` (default:
        the one it was opened with). A format-1 state is re-keyed straight under ``source``
        (its old source is not needed: it has none). Returns (before, after) descriptions."""
        with self._lock:
            if self._legacy and self._keys.chain is None:
                before = self._keys.describe()
                self._rekey(KeyChain(), source)
                self._legacy = False
                return before, self._keys.describe()
            chain = self.open_keys()
            before = self._keys.describe()
            self._rekey(chain, source)
            return before, self._keys.describe()

    def _rekey(self, chain: KeyChain, source: KeySource | None) -> None:
        new, start = chain.extended(), chain.generation
        self._keys.seal(new, source)          # first: a source that fails changes nothing
        self._specs = {name: {isid: relayer_record(rec, new, start) for isid, rec in recs.items()}
                       for name, recs in self._specs.items()}
        self._refusals = {name: {isid: relayer_refusal(r, isid, new, start)
                                 for isid, r in by_id.items()}
                          for name, by_id in self._refusals.items()}
        self._check_all = True                # every record changed: validate them all
        self._whole = True                    # every record changed: the next write is full
        self._changes += 1

    def keys_fingerprint(self) -> str | None:
        """A digest of the stored keys section (None: format 1); a backend keeps no backup
        under keys that are not the ones being written (:mod:`.local`)."""
        with self._lock:
            envelope = self._keys.envelope
            return None if envelope is None else digest(envelope)

    def redaction_key(self) -> bytes:
        """For :class:`reconciler.dicom.redact.Redactor`, so that redacted output of this state
        shows equal values alike, under a key of the state's own (never its hashes)."""
        return self.open_keys().redaction_key()

    # -- hashing ---------------------------------------------------------------------------
    def hash_value(self, value: Any, image_set_id: str, path: str) -> str:
        """The keyed hash of ``value`` (``None`` — absent — included) at ``path`` of image
        set ``image_set_id``: the HMAC chain over sha256 of salt + its canonical JSON (see
        :mod:`.keychain`). The caller passes the value already normalised the way the diff
        compares it."""
        return self.open_keys().layer(VALUE, digest(value, self._salt_bytes), 0,
                                      binding(image_set_id, path))

    def hash_values(self, values: Mapping[str, Any], image_set_id: str) -> dict[str, str]:
        """``{path: value}`` of one image set → ``{stored path: hash}``, ready for
        :class:`ImageSetRecord.hashes` (UIDs in paths become tokens; a path given with tokens
        stays as it is)."""
        chain = self.open_keys()
        return {stored_path(path, chain): self.hash_value(value, image_set_id, path)
                for path, value in values.items()}

    def request_hash(self, request: str, image_set_id: str) -> str:
        """The keyed hash a :class:`Refusal` keeps of a request (its canonical JSON)."""
        return self.open_keys().layer(VALUE, digest(request, self._salt_bytes), 0,
                                      request_binding(image_set_id))

    def spec_digest(self, spec_digest: str) -> str:
        """A spec's digest as records keep it (keyed: a digest over a spec that holds one
        unknown value would otherwise be a test for it)."""
        return self.open_keys().layer(SPEC, spec_digest)

    def resolve_paths(self, record: ImageSetRecord, uids: set[str]) -> dict[str, str]:
        """The record's stored paths → paths with the real UIDs of ``uids`` (those of the live
        document, of the specs); a token none of them gives stays (that series or instance is
        not in the live document, so absent)."""
        return resolve(list(record.hashes), uids, self.open_keys())

    def matches(self, record: ImageSetRecord, path: str, value: Any) -> bool | None:
        """Whether ``value`` is what was applied at ``path`` (stored or real; None when the
        path is unmanaged)."""
        recorded = record.hashes.get(stored_path(path, self.open_keys()))
        if recorded is None:
            return None
        return secrets.compare_digest(recorded, self.hash_value(value, record.image_set_id, path))
