"""Persistence of the emulator's records under ``--data-dir`` (or nowhere: in memory).

Layout, chosen so that one update rewrites only what it changed:

    DATA_DIR/datastores/<datastoreId>.json          the data store record
    DATA_DIR/imagesets/<imageSetId>/set.json        image set record + version records
    DATA_DIR/imagesets/<imageSetId>/v<N>.json       version N's metadata (+ pending content)
    DATA_DIR/jobs/<jobId>.json                      an import job

Every file is written atomically (temporary file in the same directory, fsync, rename), so a
crash leaves either the old or the new file, never half of one. Documents are written when a
version is created or completes; the small ``set.json`` on every state change.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

from .entities import Datastore, ImageSet, Version


def atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _dump(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode("utf-8")


class MemoryStore:
    """No persistence: the default without ``--data-dir``."""

    persistent = False

    def load(self) -> tuple[list[Datastore], list[ImageSet]]:
        return [], []

    def save_datastore(self, datastore: Datastore) -> None:
        pass

    def save_image_set(self, image_set: ImageSet, versions: list[Version] | None = None) -> None:
        pass

    def save_job(self, job: Any) -> None:
        pass

    def load_jobs(self) -> list[dict[str, Any]]:
        return []

    def clear(self) -> None:
        pass


class FileStore(MemoryStore):
    persistent = True

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def _set_dir(self, image_set_id: str) -> Path:
        return self.root / "imagesets" / image_set_id

    def save_datastore(self, datastore: Datastore) -> None:
        atomic_write(self.root / "datastores" / f"{datastore.datastore_id}.json",
                     _dump(datastore.to_record()))

    def save_image_set(self, image_set: ImageSet, versions: list[Version] | None = None) -> None:
        """Write the set record and the documents of ``versions`` (default: all of them)."""
        folder = self._set_dir(image_set.image_set_id)
        for version in image_set.versions if versions is None else versions:
            pending = (version.pending or {}).get("metadata")
            atomic_write(folder / f"v{version.version_id}.json",
                         _dump({"metadata": version.metadata, "pending_metadata": pending}))
        atomic_write(folder / "set.json", _dump(image_set.to_record()))

    def load(self) -> tuple[list[Datastore], list[ImageSet]]:
        datastores = [Datastore.from_record(json.loads(p.read_bytes()))
                      for p in sorted((self.root / "datastores").glob("*.json"))]
        return datastores, list(self._image_sets())

    def _image_sets(self) -> Iterator[ImageSet]:
        for folder in sorted((self.root / "imagesets").glob("*")):
            record_path = folder / "set.json"
            if not record_path.exists():
                continue
            record = json.loads(record_path.read_bytes())
            documents = {v["version_id"]: json.loads((folder / f"v{v['version_id']}.json")
                                                     .read_bytes())
                         for v in record["versions"]}
            yield ImageSet.from_record(record, documents)

    def save_job(self, job: Any) -> None:
        atomic_write(self.root / "jobs" / f"{job.jobId}.json", _dump(job.to_record()))

    def load_jobs(self) -> list[dict[str, Any]]:
        return [json.loads(p.read_bytes()) for p in sorted((self.root / "jobs").glob("*.json"))]

    def clear(self) -> None:
        for sub in ("datastores", "imagesets", "jobs"):
            base = self.root / sub
            if not base.exists():
                continue
            for path in sorted(base.rglob("*"), key=lambda p: -len(p.parts)):
                path.unlink() if path.is_file() else path.rmdir()


def open_store(data_dir: str | None) -> MemoryStore:
    return FileStore(data_dir) if data_dir else MemoryStore()
