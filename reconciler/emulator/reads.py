"""Image-set read operations: GetImageSet, GetImageSetMetadata, ListImageSetVersions, Search.

Mixed into :class:`~.models.HealthImagingBackend`; every method takes the backend lock and
completes due work first (:meth:`~.core.BackendCore._advance`), so a read never shows work
that should already have finished.
"""

from __future__ import annotations

import json

from typing import Any

from . import search
from .core import Call, conflict, not_found
from .entities import encode
from .paging import fingerprint, paginate


class ReadsMixin:
    # ------------------------------------------------------------------ image-set reads
    def get_image_set(self, p: dict[str, Any], call: Call) -> dict[str, Any]:
        with self.lock:
            self._advance()
            image_set = self._image_set(p["datastoreId"], p["imageSetId"])
            version = self._version(image_set, p.get("versionId"))
            out = image_set.properties(version, call.region)
            latest = image_set.latest
            if latest.pending and latest.pending.get("polls", 0) > 0:
                latest.pending["polls"] -= 1   # this poll saw it LOCKED
            return out

    def get_image_set_metadata(self, p: dict[str, Any], call: Call) -> dict[str, Any]:
        with self.lock:
            self._advance()
            image_set = self._image_set(p["datastoreId"], p["imageSetId"])
            if image_set.deleted and self.behaviours.deleted_metadata_read == "conflict":
                raise conflict(f"Image set {image_set.image_set_id} is deleted")
            if image_set.deleted:
                raise not_found(f"Image set {image_set.image_set_id} is deleted")
            version = self._version(image_set, p.get("versionId"))
            pending_read = False
            if image_set.in_flight(version) and version.pending:
                mode = self.behaviours.locked_metadata_read
                if mode == "conflict":
                    raise conflict(f"Version {version.version_id} of image set "
                                   f"{image_set.image_set_id} is still being written")
                pending_read = mode == "pending" and version.pending.get("metadata") is not None
            if pending_read or self.behaviours.schema_version == "number":
                blob = self._encoded(image_set, version, pending_read)
            else:
                blob = version.document.blob            # stored as it is sent
            image_set.last_accessed_at = self.clock()
            return {"imageSetMetadataBlob": blob, "contentType": "application/json",
                    "contentEncoding": "gzip"}

    def _encoded(self, image_set: Any, version: Any, pending_read: bool) -> bytes:
        """The blob of a content other than the stored one: the pending content, or the
        document with ``SchemaVersion`` as a number (``schema_version=number``)."""
        key = (image_set.image_set_id, version.version_id, pending_read)
        blob = self._gzip_cache.get(key)
        if blob is None or image_set.in_flight(version):
            doc = version.pending["metadata"] if pending_read else version.metadata
            if self.behaviours.schema_version == "number":   # the form it accepts
                doc = dict(doc, SchemaVersion=1.1)
            blob = encode(doc)
            if not image_set.in_flight(version):
                self._gzip_cache[key] = blob
        return blob

    def list_image_set_versions(self, p: dict[str, Any], call: Call) -> dict[str, Any]:
        with self.lock:
            self._advance()
            image_set = self._image_set(p["datastoreId"], p["imageSetId"])
            if image_set.deleted and self.behaviours.deleted_metadata_read == "not_found":
                raise not_found(f"Image set {image_set.image_set_id} is deleted")
            versions = list(image_set.versions)
            if self.behaviours.versions_order == "desc":
                versions.reverse()
            page, token = paginate(versions, p.get("maxResults"), p.get("nextToken"),
                                   fingerprint("versions", image_set.image_set_id),
                                   self.behaviours.default_page_size)
            items = []
            for version in page:
                props = image_set.properties(version, call.region)
                items.append({"imageSetId": props["imageSetId"], "versionId": props["versionId"],
                              "imageSetState": props["imageSetState"],
                              "ImageSetWorkflowStatus": props["imageSetWorkflowStatus"],
                              "createdAt": props["createdAt"], "updatedAt": props["updatedAt"],
                              "deletedAt": props["deletedAt"], "message": props["message"],
                              "overrides": props["overrides"], "isPrimary": props["isPrimary"]})
            return {"imageSetPropertiesList": items, "nextToken": token}

    def search_image_sets(self, p: dict[str, Any], call: Call) -> dict[str, Any]:
        with self.lock:
            self._advance()
            ds = self._datastore(p["datastoreId"])
            criteria = p.get("searchCriteria") or {}
            ids = self.search_index.candidates(search.compile_filters(criteria))
            lag = self.settings.scaled(self.behaviours.search_index_lag)
            # A listing of the whole data store (drift pages through it, 50 at a time) is
            # computed once and kept while nothing changes: with no index lag and no update
            # in flight it depends on the image sets alone. Else every page of 100,000 image
            # sets sorted them all again.
            key = (self.changes, ds.datastore_id, json.dumps(criteria, sort_keys=True))
            cacheable = ids is None and lag == 0 and not self._pending_ids
            if cacheable and self._listing is not None and self._listing[0] == key:
                found = self._listing[1]
            else:
                if ids is None:
                    candidates = [s for s in self.image_sets.values()
                                  if s.datastore_id == ds.datastore_id]
                else:                                 # the index: a superset of the matches
                    candidates = [s for s in map(self.image_sets.get, ids)
                                  if s is not None and s.datastore_id == ds.datastore_id]
                found = search.search(search.entries(candidates, self.clock(), lag), criteria)
                self._listing = (key, found) if cacheable else None
            page, token = paginate(found, p.get("maxResults"), p.get("nextToken"),
                                   fingerprint("search", ds.datastore_id, criteria),
                                   self.behaviours.default_page_size)
            return {"imageSetsMetadataSummaries": [search.summary(e) for e in page],
                    "sort": criteria.get("sort"), "nextToken": token}

