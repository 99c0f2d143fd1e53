"""The backend a ``state:`` block of ``reconciler.yaml`` describes. Apart from the backends,
so that they import the contract (:mod:`.backend`) and nothing imports them but this."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..core.errors import ConfigError
from .backend import DEFAULT_LOCAL_PATH, DEFAULT_S3_KEY, StateBackend
from .keys import KeySource, config_value


def open_backend(config_state: Any, root: Path, keys: KeySource | None = None) -> StateBackend:
    """The backend a config describes. ``config_state`` is a mapping or an object (e.g.
    ``reconciler.spec.config.StateConfig``) with:

    * ``backend``: ``"local"`` (default) or ``"s3"``;
    * local: ``path`` (default ``.reconciler/state.json``; relative paths are relative to
      ``root``, the directory of ``reconciler.yaml`` or the working directory);
    * s3: ``bucket`` (required), ``key`` (default ``reconciler/state.json``), ``region``,
      and optionally ``endpoint_url`` (else boto3's ``AWS_ENDPOINT_URL_S3`` /
      ``AWS_ENDPOINT_URL`` / config file), ``profile``, ``kms_key_id`` (SSE-KMS instead of
      SSE-S3 ``AES256``).

    ``keys`` opens the keys of the state it reads (:mod:`.keys`; None: the default key file).
    """
    backend = _open(config_state, root)
    backend.keys = keys
    return backend


def _open(config_state: Any, root: Path) -> StateBackend:
    kind = config_value(config_state, "backend") or "local"
    if kind == "local":
        from .local import LocalBackend
        path = Path(config_value(config_state, "path") or DEFAULT_LOCAL_PATH)
        return LocalBackend(path if path.is_absolute() else Path(root) / path, root=Path(root))
    if kind == "s3":
        from .s3 import S3Backend
        bucket = config_value(config_state, "bucket")
        if not bucket:
            raise ConfigError("state backend s3 needs a bucket (state.bucket in reconciler.yaml)")
        return S3Backend(bucket=bucket,
                         key=config_value(config_state, "key") or DEFAULT_S3_KEY,
                         region=config_value(config_state, "region"),
                         endpoint_url=config_value(config_state, "endpoint_url"),
                         profile=config_value(config_state, "profile"),
                         kms_key_id=config_value(config_state, "kms_key_id"),
                         errored_dir=Path(root))
    raise ConfigError(f"unknown state backend {kind!r} (expected 'local' or 's3')")
