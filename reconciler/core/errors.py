"""Domain errors of reconciler, and the one place they become exit codes.

Every failure the product can meet is one of these classes. Each says whether retrying the
same call could help (``retryable``), so the engine never has to guess from a message. The
command line maps them to exit codes in :func:`exit_code_for` and nowhere else.

Messages never contain DICOM metadata values: they name files, lines, attributes, image-set
ids and service error codes only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_CHANGES = 2  # plan --detailed-exitcode: changes present; drift: drift found


class ReconcilerError(Exception):
    """Base class. ``retryable`` tells the engine whether the same call may succeed later."""

    retryable = False
    exit_code = EXIT_ERROR

    def __init__(self, message: str = ""):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class UsageError(ReconcilerError):
    """The command line was used wrongly (missing argument, conflicting options, no terminal)."""


class ConfigError(ReconcilerError):
    """``reconciler.yaml`` or an environment setting is invalid."""


@dataclass(frozen=True)
class Diagnostic:
    """One problem found in a spec, in the compiler convention ``FILE:LINE:COLUMN: PATH: message``."""

    file: str
    line: int
    column: int
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class SpecError(ReconcilerError):
    """One or more specs are invalid; nothing may be sent. Carries every diagnostic."""

    def __init__(self, diagnostics: list[Diagnostic]):
        self.diagnostics = list(diagnostics)
        count = len(self.diagnostics)
        super().__init__(f"{count} problem{'s' if count != 1 else ''} found in the specs")


class LimitError(ReconcilerError):
    """A plan goes beyond ``limits`` of reconciler.yaml (and the run did not lift them):
    nothing was written."""


class PlanFileError(ReconcilerError):
    """A saved plan cannot be used: unreadable, edited by hand, wrong format, or stale."""


class StalePlanError(PlanFileError):
    """The saved plan no longer matches the state or the live image sets."""


class KeyUnavailableError(ReconcilerError):
    """The key the state's hashes or a saved plan need cannot be had: its source is missing
    (no key file, no environment variable, no access to the KMS key) or holds another key.
    The message names the source, never key material; nothing is checked or written without it."""


class StateError(ReconcilerError):
    """The state cannot be read, written or locked. ``errored_path``: where a snapshot that
    could not be written was kept instead (Terraform's ``errored.tfstate``), if anywhere."""

    def __init__(self, message: str = "", *, errored_path: Any = None):
        super().__init__(message)
        self.errored_path = errored_path


class LockError(StateError):
    """The state lock cannot be taken or released. ``held``: another run holds it (the
    message names ``holder``, a ``states.locking.LockInfo`` when it could be read) — as
    opposed to a lock that cannot be taken at all (a read-only role or directory)."""

    def __init__(self, message: str = "", *, held: bool = False, holder: Any = None):
        super().__init__(message)
        self.held = held
        self.holder = holder


class StateConflictError(StateError):
    """The stored state moved on since it was read (another run wrote it, or it has another
    lineage): the write was refused and nothing was overwritten. Re-read, merge, write again."""


class ServiceError(ReconcilerError):
    """An error answered by HealthImaging (or the emulator), or a failure to reach it.

    ``code`` is the service's error code (``ConflictException`` …); ``status`` the HTTP status.
    """

    code = "ServiceError"

    def __init__(self, message: str = "", *, code: str | None = None, status: int | None = None,
                 operation: str | None = None):
        super().__init__(message)
        if code:
            self.code = code
        self.status = status
        self.operation = operation
        self.retry_attempts = 0   # botocore's automatic retries before this answer
        self.subject: str | None = None   # what the call was for: "image set … (spec …)"

    def __str__(self) -> str:
        op = f"{self.operation}: " if self.operation else ""
        text = f"{op}{self.code}: {self.message}" if self.message else f"{op}{self.code}"
        return f"{self.subject}: {text}" if self.subject else text


def about(exc: ServiceError, subject: str) -> ServiceError:
    """Name what a failed call was for (ids and spec names only, never values), unless a
    narrower subject was named already; returns ``exc`` to re-raise."""
    if exc.subject is None:
        exc.subject = subject
    return exc


class ConflictError(ServiceError):
    """409: the version moved on or the image set is locked. Re-read and re-diff, never resend."""

    code = "ConflictException"


class ThrottlingError(ServiceError):
    code = "ThrottlingException"
    retryable = True


class InternalServerError(ServiceError):
    """500. Retryable for reads; before resending a write, re-read: it may have landed."""

    code = "InternalServerException"
    retryable = True


class ServiceValidationError(ServiceError):
    code = "ValidationException"


class NotFoundError(ServiceError):
    code = "ResourceNotFoundException"


class AccessDeniedError(ServiceError):
    """403: credentials are wrong for every further call; stop writing."""

    code = "AccessDeniedException"


class QuotaExceededError(ServiceError):
    """402: a service quota is exhausted; stop writing."""

    code = "ServiceQuotaExceededException"


class EndpointError(ServiceError):
    """The endpoint could not be reached (connection refused, DNS, timeout after retries)."""

    code = "EndpointConnectionError"
    retryable = True


class CredentialsError(ServiceError):
    """No usable AWS credentials were found."""

    code = "NoCredentialsError"


class MalformedResponseError(ServiceError):
    """The service answered something we cannot parse (truncated gzip, invalid JSON)."""

    code = "MalformedResponse"


SERVICE_ERRORS: dict[str, type[ServiceError]] = {
    cls.code: cls
    for cls in (ConflictError, ThrottlingError, InternalServerError, ServiceValidationError,
                NotFoundError, AccessDeniedError, QuotaExceededError)
}


def exit_code_for(error: BaseException) -> int:
    """The one mapping from an error to a process exit code (see the README's table)."""
    if isinstance(error, ReconcilerError):
        return error.exit_code
    return EXIT_ERROR
