"""``state rekey``: rotate the key of the state's hashes, under the state lock.

The state's hashes, UID tokens, spec digests and refusals get one more HMAC layer under a new
data key (:mod:`reconciler.states.keychain` says why a layer, not a re-hash from values: the
state has none), and the chain of data keys is sealed again under the key source configured
now, which may be another one than the state's (a key file moved to KMS, a leaked CI secret
replaced): ``from_source`` opens the state as it is. Nothing is read from HealthImaging, no
record's serial moves (plans saved before stay applicable), and the state is written once,
atomically; the local backend then keeps no backup under the old key.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..core import errors
from ..states import StateBackend
from ..states.keys import KeySource
from .operations import locked_state


@dataclass(frozen=True)
class Rekeyed:
    location: str
    records: int
    refusals: int
    before: str          # "key generation 1 (id …), sealed with a key file (key id …)"
    after: str
    serial: int


def rekey(backend: StateBackend, source: KeySource, from_source: KeySource | None = None,
          lock_timeout: float = 0.0) -> Rekeyed:
    """Re-key the state of ``backend``: opened with ``from_source`` (default: ``source``),
    sealed with ``source``. StateError when there is no state; KeyUnavailableError (nothing
    written) when either key cannot be had."""
    backend.keys = from_source or source
    with locked_state(backend, "rekey", lock_timeout, open_keys=False) as state:
        if state.serial == 0:
            raise errors.StateError(f"no state at {backend.describe()}: nothing to re-key")
        before, after = state.rekey(source)
        backend.write(state)
        backend.keys = source
        refusals = sum(len(by_id) for by_id in state.to_dict().get("refusals", {}).values())
        return Rekeyed(backend.describe(), len(state), refusals, before, after, state.serial)
