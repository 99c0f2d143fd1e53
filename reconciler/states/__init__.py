"""The state: what our last apply did, per spec and image set (hashes, never values), and
where it is kept (a local file or an S3 object, behind one interface).

Typical use by apply::

    backend = open_backend(config.state, config.root)
    with backend.lock("apply", timeout=lock_timeout):
        state = backend.read() or State.new()
        for outcome in ...:                       # after every image set
            state.put(spec.name, ImageSetRecord(..., hashes=state.hash_values(values)))
            backend.write(state)                  # serial + 1; StateConflictError on lost update
"""

from .backend import DEFAULT_LOCAL_PATH, DEFAULT_S3_KEY, LockInfo, StateBackend
from .document import FORMAT_VERSION, State
from .factory import open_backend
from .records import (
    OP_APPLY, OP_ROLLBACK, DriftCheckpoint, ImageSetRecord, Refusal, utc_now, utc_time)

__all__ = ["DEFAULT_LOCAL_PATH", "DEFAULT_S3_KEY", "FORMAT_VERSION", "OP_APPLY", "OP_ROLLBACK",
           "DriftCheckpoint", "ImageSetRecord", "LockInfo", "Refusal", "State", "StateBackend",
           "open_backend", "utc_now", "utc_time"]
