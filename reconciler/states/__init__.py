"""The state: what our last apply did, per spec and image set (hashes, never values), and
where it is kept (a local file or an S3 object, behind one interface).

Typical use by apply::

    backend = open_backend(config.state, config.root, keys=key_source(config.keys))
    with backend.lock("apply", timeout=lock_timeout):
        state = backend.read() or backend.new_state()
        state.open_keys()                         # KeyUnavailableError: no key, nothing compared
        for outcome in ...:                       # after every image set
            state.put(spec.name, ImageSetRecord(..., hashes=state.hash_values(values, isid)))
            backend.write(state)                  # serial + 1; StateConflictError on lost update

The hashes are keyed (:mod:`.keychain`) with keys from a key source (:mod:`.keys`: a key file,
an environment variable, or KMS through :mod:`.kms`).
"""

from .backend import DEFAULT_LOCAL_PATH, DEFAULT_S3_KEY, LockInfo, StateBackend
from .document import FORMAT_VERSION, State
from .factory import open_backend
from .records import (
    OP_APPLY, OP_ROLLBACK, DriftCheckpoint, ImageSetRecord, Refusal, utc_now, utc_time)

__all__ = ["DEFAULT_LOCAL_PATH", "DEFAULT_S3_KEY", "FORMAT_VERSION", "OP_APPLY", "OP_ROLLBACK",
           "DriftCheckpoint", "ImageSetRecord", "LockInfo", "Refusal", "State", "StateBackend",
           "open_backend", "utc_now", "utc_time"]
