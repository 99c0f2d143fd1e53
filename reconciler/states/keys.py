"""Key sources: the secret the state's hashes and saved plans depend on, and where it lives.

Two levels, as in AWS's envelope encryption (docs/threat-model.md):

* a **key source** (a key-encryption key) never touches data itself, it only wraps data keys:
  a **KMS key** (``GenerateDataKey`` makes a data key and its ``CiphertextBlob``, ``Decrypt``
  opens it; the recommended source for an S3 state and CI), a secret in an **environment
  variable** (a CI secret), or a **key file** in the user's configuration directory
  (``$XDG_CONFIG_HOME/reconciler/key``, else ``~/.config/reconciler/key``; mode 0600, created
  on first use with a one-line notice: the default, so a local project needs no setup). A
  local secret wraps with AES-256-GCM under a key derived from it; its *key id* (derived too,
  one-way) names it in messages. Key files and environment variables holding the same secret
  open each other's data keys.
* **data keys**: random 256-bit keys, one per state (:mod:`.keychain`) and one per saved plan,
  stored only wrapped.

:func:`seal` puts bytes in such an envelope: a fresh data key, wrapped by the source, and the
bytes under AES-256-GCM with it; everything public in the envelope and a *context* (what it is,
which state it belongs to: KMS's encryption context too) are authenticated as associated data,
so an envelope moved to another state or edited does not open. Nothing here logs, prints or
puts into a message any key material.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import re
import secrets
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ..core.canonical import canonical_bytes
from ..core.errors import ConfigError, KeyUnavailableError
from . import files

log = logging.getLogger(__name__)

KEY_BYTES = 32
NONCE_BYTES = 12
SOURCE_FILE, SOURCE_ENV, SOURCE_KMS = "file", "env", "kms"
SOURCES = (SOURCE_FILE, SOURCE_ENV, SOURCE_KMS)
LOCAL_SOURCES = (SOURCE_FILE, SOURCE_ENV)
DEFAULT_ENV = "RECONCILER_KEY"
GENERATE_HINT = "openssl rand -base64 32"
_HEX = re.compile(r"^(?:[0-9a-fA-F]{2})+$")


class SealError(Exception):
    """An envelope that does not open although its key is at hand: it was modified, or it
    belongs to another state. Callers turn it into their own error (plan file, state)."""


def derive(key: bytes, purpose: str) -> bytes:
    """A 256-bit subkey of ``key`` for one purpose (HKDF-SHA256): one key never serves two."""
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None,
                info=b"reconciler/" + purpose.encode("ascii")).derive(key)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: Any) -> bytes | None:
    """The bytes of a base64 text :func:`b64` wrote; None for anything else, also for another
    spelling of the same bytes (the unused low bits of a padded last character): an edit of
    a sealed file must never pass for the original."""
    if not isinstance(text, str):
        return None
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    return data if b64(data) == text else None


def parse_secret(text: str) -> bytes | None:
    """A secret as a key file or an environment variable holds it: hex, or base64 (standard or
    URL-safe, padding optional), of at least 32 bytes. None when it is not one."""
    text = text.strip()
    if _HEX.match(text):
        data = bytes.fromhex(text)
    else:
        try:
            padded = text.replace("-", "+").replace("_", "/") + "=" * (-len(text) % 4)
            data = base64.b64decode(padded, validate=True)
        except (binascii.Error, ValueError):
            return None
    return data if len(data) >= KEY_BYTES else None


def wrapped_by(wrapping: Mapping[str, Any]) -> str:
    """Which key a stored data key was wrapped with, for messages (ids only)."""
    source = wrapping.get("source")
    if source == SOURCE_KMS:
        return f"KMS key {wrapping.get('kms_key_id')}"
    if source in LOCAL_SOURCES:
        kind = "a key file" if source == SOURCE_FILE else "an environment variable's key"
        return f"{kind} (key id {wrapping.get('kek_id')})"
    return "an unknown kind of key"


class KeySource(ABC):
    """Wraps and opens data keys. ``kind`` is one of :data:`SOURCES`."""

    kind: str

    @abstractmethod
    def describe(self) -> str:
        """The source for messages: ``key file PATH``, ``environment variable NAME``, …"""

    @abstractmethod
    def new_data_key(self, context: Mapping[str, str]) -> tuple[bytes, dict[str, Any]]:
        """A fresh data key, and its wrapped form to store (``{"source": kind, ...}``)."""

    @abstractmethod
    def open_data_key(self, wrapping: Mapping[str, Any], context: Mapping[str, str],
                      what: str) -> bytes:
        """The data key ``wrapping`` holds. :class:`KeyUnavailableError` naming ``what`` and
        the source when this source is missing or is not the key it was wrapped with;
        :class:`SealError` when it should open and does not."""

    def __repr__(self) -> str:        # never anything but the description
        return f"<{type(self).__name__} {self.describe()}>"


class LocalKeySource(KeySource):
    """A secret this process holds; what wraps is a key derived from it, never the secret."""

    def __init__(self) -> None:
        self._derived: tuple[bytes, str] | None = None

    @abstractmethod
    def _secret(self, create: bool) -> bytes: ...

    def _keys(self, create: bool) -> tuple[bytes, str]:
        if self._derived is None:
            secret = self._secret(create)
            self._derived = derive(secret, "kek/wrap"), derive(secret, "kek/id")[:8].hex()
        return self._derived

    def key_id(self, create: bool = False) -> str:
        """The public, one-way id of this secret (to tell two keys apart in messages)."""
        return self._keys(create)[1]

    def new_data_key(self, context: Mapping[str, str]) -> tuple[bytes, dict[str, Any]]:
        wrap, kek_id = self._keys(create=True)
        data_key, nonce = secrets.token_bytes(KEY_BYTES), os.urandom(NONCE_BYTES)
        sealed = AESGCM(wrap).encrypt(nonce, data_key, _aad(context, {"kek_id": kek_id}))
        return data_key, {"source": self.kind, "kek_id": kek_id, "wrapped": b64(nonce + sealed)}

    def open_data_key(self, wrapping: Mapping[str, Any], context: Mapping[str, str],
                      what: str) -> bytes:
        if wrapping.get("source") not in LOCAL_SOURCES:
            raise KeyUnavailableError(f"{what} was sealed with {wrapped_by(wrapping)}, and this "
                                      f"run's key source is {self.describe()} (keys in "
                                      f"reconciler.yaml)")
        try:
            wrap, kek_id = self._keys(create=False)
        except KeyUnavailableError as exc:
            raise KeyUnavailableError(f"{what} needs {wrapped_by(wrapping)}: {exc}") from None
        if wrapping.get("kek_id") != kek_id:
            raise KeyUnavailableError(f"{what} was sealed with {wrapped_by(wrapping)}; "
                                      f"{self.describe()} holds another key (key id {kek_id})")
        blob = unb64(wrapping.get("wrapped"))
        try:
            if blob is None or len(blob) <= NONCE_BYTES:
                raise InvalidTag()
            return AESGCM(wrap).decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:],
                                        _aad(context, {"kek_id": kek_id}))
        except InvalidTag:
            raise SealError(f"{what}: its data key does not open with {self.describe()} "
                            f"although the key ids match") from None


class FileKeySource(LocalKeySource):
    kind = SOURCE_FILE

    def __init__(self, path: Path):
        super().__init__()
        self.path = Path(path)

    def describe(self) -> str:
        return f"key file {self.path}"

    def _secret(self, create: bool) -> bytes:
        try:
            mode = os.stat(self.path).st_mode
        except FileNotFoundError:
            if not create:
                raise KeyUnavailableError(
                    f"there is no key file at {self.path}; copy the key file of the machine "
                    f"that wrote it there (mode 0600), or name it in keys.file of "
                    f"reconciler.yaml") from None
            return self._create()
        except OSError as exc:
            raise KeyUnavailableError(f"cannot read the key file {self.path} "
                                      f"({exc.strerror})") from None
        if mode & 0o077:
            raise KeyUnavailableError(f"the key file {self.path} can be read by others (mode "
                                      f"{oct(mode & 0o777)}); make it private: chmod 600 "
                                      f"{self.path}")
        try:
            secret = parse_secret(self.path.read_text(encoding="ascii"))
        except (OSError, UnicodeDecodeError) as exc:
            raise KeyUnavailableError(f"cannot read the key file {self.path} "
                                      f"({type(exc).__name__})") from None
        if secret is None:
            raise KeyUnavailableError(f"the key file {self.path} does not hold a key (one line: "
                                      f"32 or more random bytes, base64 or hex)")
        return secret

    def _create(self) -> bytes:
        """A new random key, linked into place so that a key file another process created
        meanwhile is never replaced (both then use that one)."""
        try:
            files.ensure_dir(self.path.parent)
            fd, tmp = tempfile.mkstemp(prefix=".key.", dir=self.path.parent)
            try:
                os.fchmod(fd, 0o600)
                with os.fdopen(fd, "w", encoding="ascii") as handle:
                    handle.write(b64(secrets.token_bytes(KEY_BYTES)) + "\n")
                    handle.flush()
                    os.fsync(handle.fileno())
                os.link(tmp, self.path)
                created = True
            except FileExistsError:
                created = False
            finally:
                Path(tmp).unlink(missing_ok=True)
        except OSError as exc:
            raise KeyUnavailableError(f"cannot create the key file {self.path} "
                                      f"({exc.strerror or type(exc).__name__})") from None
        if created:
            log.warning("created the key file %s (mode 0600) that keys the state's hashes and "
                        "saved plans: back it up; without it they cannot be checked or applied",
                        self.path)
        return self._secret(create=False)


class EnvKeySource(LocalKeySource):
    kind = SOURCE_ENV

    def __init__(self, name: str = DEFAULT_ENV, environ: Mapping[str, str] | None = None):
        super().__init__()
        self.name = name
        self._environ = environ

    def describe(self) -> str:
        return f"environment variable {self.name}"

    def _secret(self, create: bool) -> bytes:
        value = (os.environ if self._environ is None else self._environ).get(self.name)
        if not value:
            raise KeyUnavailableError(f"the environment variable {self.name} is not set (keys: "
                                      f"{{source: env}} in reconciler.yaml); give it the key, "
                                      f"e.g. a CI secret made with `{GENERATE_HINT}`")
        secret = parse_secret(value)
        if secret is None:
            raise KeyUnavailableError(f"the environment variable {self.name} does not hold a "
                                      f"key: 32 or more random bytes, base64 or hex "
                                      f"(`{GENERATE_HINT}`)")
        return secret


# -- envelopes --------------------------------------------------------------------------------
def _aad(context: Mapping[str, str], header: Mapping[str, Any]) -> bytes:
    return canonical_bytes({"context": dict(context), "header": dict(header)})


def seal(source: KeySource, data: bytes, context: Mapping[str, str],
         header: Mapping[str, Any]) -> dict[str, Any]:
    """``header`` + ``data_key`` (a fresh data key, wrapped) + ``nonce`` + ``ciphertext``
    (``data`` under AES-256-GCM; the rest of the envelope and ``context`` authenticated)."""
    data_key, wrapping = source.new_data_key(context)
    nonce = os.urandom(NONCE_BYTES)
    doc = {**header, "data_key": wrapping, "nonce": b64(nonce)}
    doc["ciphertext"] = b64(AESGCM(data_key).encrypt(nonce, data, _aad(context, doc)))
    return doc


def unseal(source: KeySource, doc: Mapping[str, Any], context: Mapping[str, str],
           what: str) -> bytes:
    """The bytes :func:`seal` put in ``doc``; raises KeyUnavailableError / SealError."""
    wrapping = doc.get("data_key")
    if not isinstance(wrapping, Mapping):
        raise SealError(f"{what} has no data key")
    data_key = source.open_data_key(wrapping, context, what)
    nonce, ciphertext = unb64(doc.get("nonce")), unb64(doc.get("ciphertext"))
    header = {k: v for k, v in doc.items() if k != "ciphertext"}
    try:
        if nonce is None or ciphertext is None or len(data_key) != KEY_BYTES:
            raise InvalidTag()
        return AESGCM(data_key).decrypt(nonce, ciphertext, _aad(context, header))
    except (InvalidTag, ValueError):
        raise SealError(f"{what} does not open with its own data key") from None


# -- the source a configuration names ---------------------------------------------------------
def config_value(config: Any, name: str) -> Any:
    """``name`` of a configuration given as a mapping or an object (None when absent)."""
    if config is None:
        return None
    if isinstance(config, Mapping):
        return config.get(name)
    return getattr(config, name, None)


def default_key_file(environ: Mapping[str, str] | None = None) -> Path:
    """``$XDG_CONFIG_HOME/reconciler/key``, else ``~/.config/reconciler/key``."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_CONFIG_HOME", "")
    root = Path(base) if base and os.path.isabs(base) else Path.home() / ".config"
    return root / "reconciler" / "key"


def key_source(config: Any = None, *, region: str | None = None) -> KeySource:
    """The key source a ``keys:`` block of reconciler.yaml describes (a mapping, or an object
    such as ``reconciler.spec.config.KeysConfig``): ``source`` (``file``, the default; ``env``;
    ``kms``), ``file``, ``env``, ``kms_key_id``, ``region`` (else ``region``), ``endpoint_url``,
    ``profile``."""
    kind = config_value(config, "source") or SOURCE_FILE
    if kind == SOURCE_FILE:
        path = config_value(config, "file")
        return FileKeySource(Path(path).expanduser() if path else default_key_file())
    if kind == SOURCE_ENV:
        return EnvKeySource(config_value(config, "env") or DEFAULT_ENV)
    if kind == SOURCE_KMS:
        key_id = config_value(config, "kms_key_id")
        if not key_id:
            raise ConfigError("keys.source kms needs keys.kmsKeyId in reconciler.yaml")
        from .kms import KmsKeySource
        return KmsKeySource(key_id, region=config_value(config, "region") or region,
                            endpoint_url=config_value(config, "endpoint_url"),
                            profile=config_value(config, "profile"))
    raise ConfigError(f"unknown key source {kind!r} (expected one of {', '.join(SOURCES)})")


def parse_source(text: str, configured: Any = None, *, region: str | None = None) -> KeySource:
    """A key source named on the command line (``state rekey --from``): ``file``,
    ``file:PATH``, ``env``, ``env:NAME`` or ``kms:KEY_ID`` (region, endpoint and profile as
    the configured ``keys`` block says)."""
    kind, _, where = text.partition(":")
    if kind not in SOURCES or (kind == SOURCE_KMS and not where):
        raise ConfigError(f"not a key source: {text!r} (file, file:PATH, env, env:NAME or "
                          f"kms:KEY_ID)")
    extra = {name: config_value(configured, name) for name in ("region", "endpoint_url", "profile")}
    field = {SOURCE_FILE: "file", SOURCE_ENV: "env", SOURCE_KMS: "kms_key_id"}[kind]
    return key_source({**extra, "source": kind, field: where or None}, region=region)
