"""The KMS key source: data keys made by ``GenerateDataKey`` and opened by ``Decrypt``.

The third boto3 seam (after ``reconciler.healthimaging.aws`` and ``reconciler.states.s3``):
the key-encryption key lives in AWS KMS and never leaves it. A data key is stored as the
``CiphertextBlob`` KMS returned, bound to an encryption context (what it keys and the state's
lineage), so a blob copied into another state or plan does not decrypt. ``Decrypt`` names the
configured key (``KeyId``), so a blob made under another KMS key is refused even where the
caller could decrypt it. The permissions a role needs: ``kms:Decrypt`` to read a state or a
saved plan, and ``kms:GenerateDataKey`` to create a state, re-key one, or save a plan.

The client comes from the standard chain (region, profile, credentials; the endpoint from
``endpointUrl`` or ``AWS_ENDPOINT_URL_KMS`` / ``AWS_ENDPOINT_URL``), with botocore's
``standard`` retries. Errors name the key and KMS's error code, never key material.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import boto3
import botocore.exceptions

from ..core.errors import KeyUnavailableError
from .keys import SOURCE_KMS, KeySource, SealError, b64, unb64, wrapped_by
from .s3 import aws_client

_sessions: dict[tuple[str | None, str | None], boto3.session.Session] = {}
_sessions_lock = threading.Lock()
_DENIED = {"AccessDeniedException", "IncorrectKeyException"}
_UNUSABLE = {"NotFoundException", "DisabledException", "KMSInvalidStateException",
             "KeyUnavailableException", "InvalidKeyUsageException"}


def make_client(region: str | None = None, endpoint_url: str | None = None,
                profile: str | None = None):
    """A ``kms`` client from the standard chain (sessions shared with the S3 backend)."""
    return aws_client("kms", region, endpoint_url, profile, read_timeout=30)


def _code(exc: botocore.exceptions.ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class KmsKeySource(KeySource):
    kind = SOURCE_KMS

    def __init__(self, key_id: str, *, region: str | None = None,
                 endpoint_url: str | None = None, profile: str | None = None, client: Any = None):
        self.key_id = key_id
        self._settings = (region, endpoint_url, profile)
        self._client = client

    def describe(self) -> str:
        return f"KMS key {self.key_id}"

    def _kms(self):
        if self._client is None:
            self._client = make_client(*self._settings)
        return self._client

    def _failed(self, exc: Exception, action: str, what: str) -> KeyUnavailableError:
        if isinstance(exc, botocore.exceptions.ClientError):
            code = _code(exc)
            if code in _DENIED:
                why = (f"{code}: the caller may not use it for kms:{action}, or the data key "
                       f"was made under another KMS key")
            elif code in _UNUSABLE:
                why = f"{code}: the key is missing, disabled or pending deletion"
            else:
                why = code or "error"
        elif isinstance(exc, botocore.exceptions.NoCredentialsError):
            why = "no AWS credentials found"
        else:
            why = type(exc).__name__
        return KeyUnavailableError(f"{what}: {self.describe()} could not be used ({why})")

    def new_data_key(self, context: Mapping[str, str]) -> tuple[bytes, dict[str, Any]]:
        try:
            answer = self._kms().generate_data_key(KeyId=self.key_id, KeySpec="AES_256",
                                                   EncryptionContext=dict(context))
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
            raise self._failed(exc, "GenerateDataKey", "a new data key") from None
        return answer["Plaintext"], {"source": SOURCE_KMS, "kms_key_id": answer["KeyId"],
                                     "wrapped": b64(answer["CiphertextBlob"])}

    def open_data_key(self, wrapping: Mapping[str, Any], context: Mapping[str, str],
                      what: str) -> bytes:
        if wrapping.get("source") != SOURCE_KMS:
            raise KeyUnavailableError(f"{what} was sealed with {wrapped_by(wrapping)}, and this "
                                      f"run's key source is {self.describe()} (keys in "
                                      f"reconciler.yaml)")
        stored = wrapping.get("kms_key_id")
        if self.key_id.startswith("arn:") and isinstance(stored, str) and stored != self.key_id:
            raise KeyUnavailableError(f"{what} was sealed with {wrapped_by(wrapping)}, not with "
                                      f"{self.describe()}")
        blob = unb64(wrapping.get("wrapped"))
        if not blob:
            raise SealError(f"{what}: its data key is not a KMS ciphertext")
        try:
            answer = self._kms().decrypt(CiphertextBlob=blob, KeyId=self.key_id,
                                         EncryptionContext=dict(context))
        except botocore.exceptions.ClientError as exc:
            if _code(exc) == "InvalidCiphertextException":
                raise SealError(f"{what}: KMS refused its data key (InvalidCiphertextException: "
                                f"modified, or made for another state or plan)") from None
            raise self._failed(exc, "Decrypt", f"{what} (sealed with {wrapped_by(wrapping)})") \
                from None
        except botocore.exceptions.BotoCoreError as exc:
            raise self._failed(exc, "Decrypt", what) from None
        return answer["Plaintext"]
