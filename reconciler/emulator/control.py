"""The control plane: data stores, tags, and the operations the emulator does not implement.

Data stores: CreateDatastore is idempotent on ``clientToken`` (boto3 fills it in) and answers
``CREATING``; the store becomes ``ACTIVE`` after ``datastore_create_delay``. DeleteDatastore
refuses a store that still holds image sets (ConflictException) and goes ``DELETING`` →
``DELETED``. Tags work on data store and image set ARNs of this emulator's fake account.

Not implemented (a clear error instead): GetImageFrame (the emulator keeps metadata, not pixel
data; see the README). Import jobs live in :mod:`imports`.
"""

from __future__ import annotations

import re
from typing import Any

from .core import Call, conflict, not_found
from .entities import ACCOUNT_ID, DELETED, Datastore
from .paging import fingerprint, paginate
from .protocol import validation

ARN = re.compile(r"arn:aws[a-z-]*:medical-imaging:([a-z0-9-]+):(\d{12}):datastore/([0-9a-z]{32})"
                 r"(?:/imageset/([0-9a-z]{32}))?")


class ControlMixin:
    # ------------------------------------------------------------------------ datastores
    def create_datastore(self, p: dict[str, Any], call: Call) -> dict[str, Any]:
        with self.lock:
            self._advance()
            token = p.get("clientToken")
            for ds in self.datastores.values():
                if token and ds.client_token == token:
                    return {"datastoreId": ds.datastore_id, "datastoreStatus": ds.status}
            now = self.clock()
            ds = Datastore(self.new_id(), p.get("datastoreName") or "datastore", "CREATING",
                           now, now, client_token=token, kms_key_arn=p.get("kmsKeyArn"),
                           lambda_authorizer_arn=p.get("lambdaAuthorizerArn"),
                           lossless_storage_format=p.get("losslessStorageFormat") or "HTJ2K",
                           tags=dict(p.get("tags") or {}))
            delay = self.settings.scaled(self.behaviours.datastore_create_delay)
            final = "CREATE_FAILED" if call.directives.update_failed else "ACTIVE"
            ds.pending = {"due_at": now + delay, "status": final}
            self.datastores[ds.datastore_id] = ds
            self.store.save_datastore(ds)
            self.events.datastore(ds.datastore_id, ds.name, ds.status, now)
            return {"datastoreId": ds.datastore_id, "datastoreStatus": ds.status}

    def get_datastore(self, p: dict[str, Any], call: Call) -> dict[str, Any]:
        with self.lock:
            self._advance()
            ds = self._datastore(p["datastoreId"], for_image_sets=False)
            return {"datastoreProperties": ds.properties(call.region)}

    def list_datastores(self, p: dict[str, Any], call: Call) -> dict[str, Any]:
        with self.lock:
            self._advance()
            status = p.get("datastoreStatus")
            stores = sorted((d for d in self.datastores.values()
                             if status is None or d.status == status),
                            key=lambda d: (d.created_at, d.datastore_id))
            page, token = paginate(stores, p.get("maxResults"), p.get("nextToken"),
                                   fingerprint("datastores", status),
                                   self.behaviours.default_page_size)
            return {"datastoreSummaries": [d.summary(call.region) for d in page],
                    "nextToken": token}

    def delete_datastore(self, p: dict[str, Any], call: Call) -> dict[str, Any]:
        with self.lock:
            self._advance()
            ds = self._datastore(p["datastoreId"], for_image_sets=False)
            if ds.status in ("DELETING", DELETED):
                raise conflict(f"Datastore {ds.datastore_id} is already {ds.status}")
            if any(s.datastore_id == ds.datastore_id and not s.deleted
                   for s in self.image_sets.values()):
                raise conflict(f"Datastore {ds.datastore_id} still contains image sets")
            ds.status, ds.updated_at = "DELETING", self.clock()
            ds.pending = {"due_at": ds.updated_at + self.settings.scaled(
                self.settings.update_delay), "status": DELETED}
            self.store.save_datastore(ds)
            self.events.datastore(ds.datastore_id, ds.name, ds.status, ds.updated_at)
            return {"datastoreId": ds.datastore_id, "datastoreStatus": ds.status}

    # ------------------------------------------------------------------------------ tags
    def _tagged(self, arn: str):
        m = ARN.fullmatch(arn)
        if not m or m.group(2) != ACCOUNT_ID:
            raise not_found(f"Resource {arn} does not exist")
        datastore_id, image_set_id = m.group(3), m.group(4)
        if image_set_id:
            return self._image_set(datastore_id, image_set_id)
        return self._datastore(datastore_id)

    def tag_resource(self, p: dict[str, Any], call: Call) -> dict[str, Any]:
        with self.lock:
            self._advance()
            resource = self._tagged(p["resourceArn"])
            tags = dict(resource.tags, **p["tags"])
            if len(tags) > 50:
                raise validation("A resource can have at most 50 tags")
            resource.tags = tags
            self._save(resource)
            return {}

    def untag_resource(self, p: dict[str, Any], call: Call) -> dict[str, Any]:
        with self.lock:
            self._advance()
            resource = self._tagged(p["resourceArn"])
            for key in p["tagKeys"]:
                resource.tags.pop(key, None)
            self._save(resource)
            return {}

    def list_tags_for_resource(self, p: dict[str, Any], call: Call) -> dict[str, Any]:
        with self.lock:
            self._advance()
            return {"tags": dict(self._tagged(p["resourceArn"]).tags)}

    def _save(self, resource: Any) -> None:
        if isinstance(resource, Datastore):
            self.store.save_datastore(resource)
        else:
            self._save_image_set(resource, [])

    # ------------------------------------------------------------------- not implemented
    def get_image_frame(self, p: dict[str, Any], call: Call) -> dict[str, Any]:
        with self.lock:
            self._image_set(p["datastoreId"], p["imageSetId"])
        raise validation("GetImageFrame is not supported by the local emulator: it keeps "
                         "image-set metadata, not pixel data")
