"""The S3 state backend: one state object shared by several CI runners, with no extra table.

Terraform's S3 backend long needed a DynamoDB table for its lock (1.10 moved it to an S3 lock
object, the same idea as here). S3's conditional writes give both things a shared state
needs, atomically, on the server:

* **the lock** is the object ``<key>.lock``, created with ``IfNoneMatch="*"``: of two
  runners racing, exactly one creation succeeds; the other gets ``412 PreconditionFailed``,
  reads the lock object to name the holder, and polls. Unlock deletes it with
  ``IfMatch=<its ETag>``, so a run only ever deletes the lock it created (or, with
  ``force``, exactly the lock it looked at and reported) — never a lock taken since.
* **the state** is written with ``IfMatch=<ETag of the snapshot we read or last wrote>``
  (``IfNoneMatch="*"`` for the first write): a compare-and-swap, so a lost update is
  impossible even between runs that bypassed or broke the lock.

Both objects are written with server-side encryption (SSE-S3 ``AES256``, or SSE-KMS when a
``kms_key_id`` is configured). The client is boto3's, so region, profile, credentials and the
endpoint (``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``) come from the standard chain, and
throttling / 5xx are retried by botocore's ``standard`` retry mode. A retried conditional
write can meet its own first attempt (412 although it landed); both paths check for that.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import boto3
import botocore.exceptions
from botocore.config import Config

from ..core.errors import ConfigError, LockError, StateConflictError, StateError
from .backend import LockInfo, StateBackend, check_expected, unlock_refused, write_failed
from .document import State

ERRORED_FILE = "errored.state.json"
_CONFLICT_CODES = {"PreconditionFailed", "ConditionalRequestConflict", "412", "409"}
_MISSING_CODES = {"NoSuchKey", "404", "NotFound"}
_UNSUPPORTED_CODES = {"NotImplemented", "InvalidArgument", "InvalidRequest", "501"}


_sessions: dict[tuple[str | None, str | None], boto3.session.Session] = {}
_sessions_lock = threading.Lock()


def make_client(region: str | None = None, endpoint_url: str | None = None,
                profile: str | None = None):
    """An ``s3`` client from the standard chain."""
    return aws_client("s3", region, endpoint_url, profile, read_timeout=60)


def aws_client(service: str, region: str | None, endpoint_url: str | None,
               profile: str | None, *, read_timeout: float):
    """A client of ``service`` for the states package (S3 here, KMS for the key source), from
    the standard chain with standard retries. Sessions are reused per (profile, region): a
    session caches the service model, which makes every further client ~20× cheaper."""
    with _sessions_lock:
        session = _sessions.get((profile, region))
        if session is None:
            try:
                session = boto3.session.Session(profile_name=profile, region_name=region)
            except botocore.exceptions.ProfileNotFound as exc:
                raise ConfigError(str(exc)) from exc
            _sessions[(profile, region)] = session
        config = Config(retries={"mode": "standard"}, connect_timeout=10,
                        read_timeout=read_timeout)
        return session.client(service, endpoint_url=endpoint_url or None, config=config)


def _code(exc: botocore.exceptions.ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _retried(exc: botocore.exceptions.ClientError) -> bool:
    """Whether botocore sent the request more than once: an earlier attempt may have landed."""
    return bool(exc.response.get("ResponseMetadata", {}).get("RetryAttempts"))


def _reason(exc: Exception) -> str:
    if isinstance(exc, botocore.exceptions.ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return f"{_code(exc) or 'error'}{f' (HTTP {status})' if status else ''}"
    if isinstance(exc, botocore.exceptions.NoCredentialsError):
        return "no AWS credentials found"
    return type(exc).__name__


class S3Backend(StateBackend):
    def __init__(self, bucket: str, key: str, *, region: str | None = None,
                 endpoint_url: str | None = None, profile: str | None = None,
                 kms_key_id: str | None = None, errored_dir: Path | None = None, client: Any = None):
        self.bucket, self.key, self.lock_key = bucket, key, key + ".lock"
        self.kms_key_id = kms_key_id
        self._client = client or make_client(region, endpoint_url, profile)
        self._errored_dir = errored_dir
        self._seen: tuple[str, int, str] | None = None     # (lineage, serial, ETag) last read/written
        self._held: tuple[LockInfo, str] | None = None     # our lock and its ETag
        self._write_mutex = threading.Lock()

    def describe(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    def _encryption(self) -> dict[str, str]:
        if self.kms_key_id:
            return {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": self.kms_key_id}
        return {"ServerSideEncryption": "AES256"}

    def _get(self, key: str) -> tuple[bytes, str] | None:
        try:
            answer = self._client.get_object(Bucket=self.bucket, Key=key)
            return answer["Body"].read(), answer["ETag"]
        except botocore.exceptions.ClientError as exc:
            if _code(exc) in _MISSING_CODES:
                return None
            raise StateError(f"cannot read s3://{self.bucket}/{key}: {_reason(exc)}") from exc
        except botocore.exceptions.BotoCoreError as exc:
            raise StateError(f"cannot read s3://{self.bucket}/{key}: {_reason(exc)}") from exc

    # -- state -----------------------------------------------------------------------------
    def read(self) -> State | None:
        got = self._get(self.key)
        if got is None:
            return None
        state = State.from_json(got[0], source=self.describe(), keys=self.keys)
        self._seen = (state.lineage, state.serial, got[1])
        return state

    def write(self, state: State) -> None:
        # Every save PUTs the whole object: the state keeps each record's text for the next
        # one (``keep_texts``), and the body is encoded piece by piece into one buffer.
        with self._write_mutex:
            state.commit_pending(lambda pending: self._store(
                state, pending.body(keep_texts=True), pending.serial))

    def _condition(self, state: State) -> dict[str, str]:
        if state.serial == 0:
            return {"IfNoneMatch": "*"}
        if self._seen is not None and self._seen[:2] == (state.lineage, state.serial):
            return {"IfMatch": self._seen[2]}
        # A state this handle did not read: look at what is stored, then swap against that.
        got = self._get(self.key)
        stored = None if got is None else State.from_json(got[0], source=self.describe())
        check_expected(self.describe(), state, stored and (stored.lineage, stored.serial))
        return {"IfMatch": got[1]} if got else {"IfNoneMatch": "*"}

    def _store(self, state: State, data: bytes, new_serial: int) -> None:
        try:
            etag = self._put_state(state, data)
        except StateConflictError as exc:
            raise self._failed(exc, data, new_serial) from None
        except StateError as exc:
            raise self._failed(f"could not write the state to {self.describe()}: {exc.message}",
                               data, new_serial) from exc
        self._seen = (state.lineage, new_serial, etag)

    def _put_state(self, state: State, data: bytes) -> str:
        """The conditional PUT; returns the new ETag, raises StateConflictError / StateError."""
        condition = self._condition(state)
        try:
            answer = self._client.put_object(Bucket=self.bucket, Key=self.key, Body=data,
                                             ContentType="application/json",
                                             **self._encryption(), **condition)
            return answer["ETag"]
        except botocore.exceptions.ClientError as exc:
            if _code(exc) not in _CONFLICT_CODES | _MISSING_CODES:
                raise StateError(_reason(exc)) from exc
            refused = _code(exc)
        except botocore.exceptions.BotoCoreError as exc:
            raise StateError(_reason(exc)) from exc
        landed = self._get(self.key)
        if landed is not None and landed[0] == data:
            return landed[1]            # our own earlier attempt landed; botocore retried it
        raise self._conflict(state, landed, refused)

    def _conflict(self, state: State, stored: tuple[bytes, str] | None, code: str) -> StateConflictError:
        """Why the conditional write was refused, in the words of the lost-update guard."""
        identity = None
        if stored is not None:
            try:
                doc = json.loads(stored[0])
                identity = (str(doc["lineage"]), int(doc["serial"]))
            except (ValueError, TypeError, KeyError):
                pass
        try:
            check_expected(self.describe(), state, identity)
        except StateConflictError as conflict:
            return conflict
        return StateConflictError(f"the state at {self.describe()} was written by another run since "
                                  f"this one read it (conditional write refused: {code})")

    def _failed(self, cause: StateConflictError | str, data: bytes, new_serial: int) -> StateError:
        where = (self._errored_dir or Path.cwd()) / ERRORED_FILE
        sse = f"--sse aws:kms --sse-kms-key-id {self.kms_key_id}" if self.kms_key_id else "--sse AES256"
        return write_failed(cause, data, new_serial, [where],
                            recovery=f"aws s3 cp {{errored}} {self.describe()} {sse}")

    # -- lock ------------------------------------------------------------------------------
    def _read_lock(self) -> tuple[LockInfo | None, str] | None:
        got = self._get(self.lock_key)
        return None if got is None else (LockInfo.from_json(got[0]), got[1])

    def _try_lock(self, info: LockInfo, name_holder: bool) -> tuple[bool, LockInfo | None]:
        if self._held is not None:
            return False, self._held[0]          # one lock per handle: not re-entrant
        try:
            answer = self._client.put_object(Bucket=self.bucket, Key=self.lock_key,
                                             Body=info.to_json().encode("utf-8"),
                                             ContentType="application/json", IfNoneMatch="*",
                                             **self._encryption())
            self._held = (info, answer["ETag"])
            return True, None
        except botocore.exceptions.ClientError as exc:
            if _code(exc) not in _CONFLICT_CODES:
                raise LockError(f"cannot lock state {self.describe()}: {_reason(exc)}") from exc
            if not (name_holder or _retried(exc)):
                return False, None
        except botocore.exceptions.BotoCoreError as exc:
            raise LockError(f"cannot lock state {self.describe()}: {_reason(exc)}") from exc
        current = self._read_lock()
        if current is None:
            return False, None                   # released in between: the next poll retries
        holder, etag = current
        if holder is not None and holder.id == info.id:
            self._held = (info, etag)            # our first attempt landed; botocore retried it
            return True, None
        return False, holder

    def _delete_lock(self, etag: str) -> bool:
        """Delete the lock object if it is still the one with ``etag``; False if it is not."""
        try:
            self._client.delete_object(Bucket=self.bucket, Key=self.lock_key, IfMatch=etag)
            return True
        except botocore.exceptions.ClientError as exc:
            code = _code(exc)
            if code in _CONFLICT_CODES | _MISSING_CODES:
                return False
            if code not in _UNSUPPORTED_CODES:
                raise LockError(f"cannot unlock state {self.describe()}: {_reason(exc)}") from exc
        except botocore.exceptions.BotoCoreError as exc:
            raise LockError(f"cannot unlock state {self.describe()}: {_reason(exc)}") from exc
        # A store without conditional deletes: compare, then delete (a small window remains).
        current = self._read_lock()
        if current is None or current[1] != etag:
            return False
        try:
            self._client.delete_object(Bucket=self.bucket, Key=self.lock_key)
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
            raise LockError(f"cannot unlock state {self.describe()}: {_reason(exc)}") from exc
        return True

    def _release(self, info: LockInfo) -> bool:
        if self._held is None or self._held[0].id != info.id:
            return False
        etag = self._held[1]
        self._held = None
        return self._delete_lock(etag)

    def lock_info(self) -> LockInfo | None:
        current = self._read_lock()
        if current is None:
            return None
        return current[0] or LockInfo(id="", operation="unknown", who="unknown", host="unknown",
                                      pid=0, since="", version="", location=self.describe())

    def unlock(self, force: bool = False, lock_id: str | None = None) -> LockInfo | None:
        if self._held is not None and lock_id in (None, self._held[0].id):
            holder = self._held[0]
            self._release(holder)
            return holder
        current = self._read_lock()
        if current is None:
            return None
        holder, etag = current
        if (lock_id is not None and (holder is None or holder.id != lock_id)) or not force:
            raise unlock_refused(self.describe(), holder, lock_id)
        if not self._delete_lock(etag):       # exactly the lock we looked at and reported
            raise LockError(f"the lock of state {self.describe()} changed while it was being "
                            f"removed; nothing was removed. Look again: reconciler state unlock")
        return holder
