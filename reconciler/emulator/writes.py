"""Image-set writes: UpdateImageSetMetadata, CopyImageSet, DeleteImageSet.

Every write starts with the same checks (data store and image set exist, not deleted, not
LOCKED, ``latestVersionId`` is the latest) and ends with work in flight: the written version is
``LOCKED`` and completes later (see :mod:`core`). What is decided *now* and what *at
completion* is a named choice where AWS is silent (README): malformed requests fail at once with 400;
constraint violations inside a well-formed update end as ``UPDATE_FAILED`` with a message (or
400 at once with ``--validation sync``). A failed version keeps the previous content.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from .core import Call, conflict, not_found, version_number
from .entities import ACTIVE, DELETED, LOCKED, ImageSet, image_set_arn, with_ids
from .protocol import validation
from .rules import MalformedDocument, parse_document, sanitise_message
from .updates import UpdateContext, apply_update, scope_for_peer


class WritesMixin:
    # ------------------------------------------------------------ UpdateImageSetMetadata
    def update_image_set_metadata(self, p: dict[str, Any], call: Call) -> dict[str, Any]:
        with self.lock:
            self._advance()
            image_set = self._image_set(p["datastoreId"], p["imageSetId"])
            self._check_writable(image_set, p["latestVersionId"])
            updates = p["updateImageSetMetadataUpdates"]
            force = bool(p.get("force"))
            include_study = bool(p.get("includeStudyImageSets"))
            current = image_set.latest.metadata
            peers: list[tuple[ImageSet, dict[str, Any]]] = []
            if updates.get("revertToVersionId") is not None:
                if include_study:
                    raise validation("includeStudyImageSets cannot be combined with "
                                     "revertToVersionId")
                new_doc, violations = self._revert_target(image_set, updates["revertToVersionId"])
            else:
                updatable, removable = self._parse_blobs(updates["DICOMUpdates"])
                ctx = UpdateContext.for_set(force, image_set.is_primary, include_study,
                                            self.behaviours)
                new_doc, violations = apply_update(current, updatable, removable, ctx,
                                                   self.behaviours)
                if include_study:
                    peers, peer_violations = self._study_peers(image_set, updatable, removable,
                                                               ctx)
                    violations += peer_violations
            if violations and self.settings.validation == "sync":
                raise validation("; ".join(dict.fromkeys(violations)))
            failure = call.directives.update_failed
            if violations:
                failure = "INVALID_REQUEST: " + ". ".join(dict.fromkeys(violations))
            group = self.new_id() if peers else None
            version = self._start_update(image_set, new_doc, "UPDATING", failure, force,
                                         call, group)
            for peer, peer_doc in peers:
                self._start_update(peer, peer_doc, self.behaviours.study_peer_status, failure,
                                   force, call, group)
            return {"datastoreId": image_set.datastore_id,
                    "imageSetId": image_set.image_set_id,
                    "latestVersionId": str(version.version_id),
                    "imageSetState": version.state,
                    "imageSetWorkflowStatus": version.status,
                    "createdAt": image_set.created_at, "updatedAt": version.updated_at}

    def _revert_target(self, image_set: ImageSet, version_id: str):
        number = version_number(version_id)
        target = image_set.version(number) if number else None
        if target is None:
            error = (not_found if self.behaviours.revert_unknown_version == "not_found"
                     else validation)
            raise error(f"revertToVersionId {version_id}: image set "
                        f"{image_set.image_set_id} has no such version")
        # A version still in flight has no final content yet; revert to what it shows.
        return copy.deepcopy(target.metadata), []

    def _parse_blobs(self, dicom_updates: dict[str, Any]):
        limit = self.behaviours.blob_max_bytes
        docs = []
        for name in ("updatableAttributes", "removableAttributes"):
            blob = dicom_updates.get(name)
            if blob is None:
                docs.append(None)
                continue
            if len(blob) > limit:
                raise validation(f"{name} is {len(blob)} bytes; at most {limit} are allowed")
            try:
                docs.append(parse_document(blob, name, self.behaviours.schema_version))
            except MalformedDocument as exc:
                raise validation(str(exc)) from None
        if docs == [None, None]:
            raise validation("DICOMUpdates needs updatableAttributes and/or removableAttributes")
        return docs[0], docs[1]

    def _study_peers(self, image_set: ImageSet, updatable, removable, ctx: UpdateContext):
        """The other primary image sets of the study, with their new content (atomic)."""
        study_uid = image_set.latest.document.summary.study.get("StudyInstanceUID")
        peers, violations = [], []
        scope = self.behaviours.include_study_scope
        for other in self.study_image_sets(image_set.datastore_id, study_uid):
            if other is image_set:
                continue
            if other.latest.state == LOCKED:
                raise conflict(f"Image set {other.image_set_id} of the same study is locked by "
                               f"an operation in progress")
            doc = other.latest.metadata
            peer_ctx = UpdateContext.for_set(ctx.force or ctx.force_refused, True, True,
                                             self.behaviours)
            new_doc, found = apply_update(doc, scope_for_peer(updatable, doc, scope),
                                          scope_for_peer(removable, doc, scope), peer_ctx,
                                          self.behaviours)
            violations += found
            peers.append((other, new_doc))
        return peers, violations

    def _start_update(self, image_set: ImageSet, new_doc: dict[str, Any], status: str,
                      failure: str | None, force: bool, call: Call, group: str | None):
        previous = image_set.latest.document            # shared, not copied
        version = self._new_version(image_set, previous, LOCKED, status, forced=force)
        version.group = group
        if failure:
            self._schedule(image_set, version, ACTIVE, "UPDATE_FAILED", call,
                           message=sanitise_message(failure))
        else:
            self._schedule(image_set, version, ACTIVE, "UPDATED", call,
                           metadata=with_ids(new_doc, image_set.datastore_id,
                                             image_set.image_set_id))
        self._save_image_set(image_set, [version])
        self._image_set_event(image_set, version, detail_type="Image Set Updating")
        return version

    # ---------------------------------------------------------------------- CopyImageSet
    def copy_image_set(self, p: dict[str, Any], call: Call) -> dict[str, Any]:
        with self.lock:
            self._advance()
            info = p["copyImageSetInformation"]
            source = self._image_set(p["datastoreId"], p["sourceImageSetId"])
            self._check_writable(source, info["sourceImageSet"]["latestVersionId"])
            content = self._copiable(source, info["sourceImageSet"].get("DICOMCopies"))
            dest_info = info.get("destinationImageSet")
            failure = call.directives.update_failed
            if dest_info:
                dest = self._image_set(p["datastoreId"], dest_info["imageSetId"])
                if dest is source:
                    raise validation("The destination image set must differ from the source")
                self._check_writable(dest, dest_info["latestVersionId"])
                merged, problem = self._merge(dest.latest.metadata, content, bool(p.get("force")))
                if problem and self.settings.validation == "sync":
                    raise validation(problem)
                failure = failure or problem
                version = self._new_version(dest, dest.latest.document, LOCKED, "COPYING",
                                            forced=bool(p.get("force")))
            else:
                now = self.clock()
                promote = bool(p.get("promoteToPrimary"))
                demote: list[str] = []
                if promote:
                    demote, problem = self._primaries_in_the_way(source, content)
                    if problem and self.settings.validation == "sync":
                        raise validation(problem)
                    failure = failure or problem
                    promote = not problem
                dest = ImageSet(self.new_id(), source.datastore_id, now, is_primary=promote)
                self.image_sets[dest.image_set_id] = dest
                merged = content
                version = self._new_version(dest, with_ids(content, dest.datastore_id,
                                                           dest.image_set_id),
                                            LOCKED, "COPYING", forced=bool(p.get("force")))
            if failure:
                self._schedule(dest, version, ACTIVE, "COPY_FAILED", call,
                               message=sanitise_message(failure))
            else:
                self._schedule(dest, version, ACTIVE, "COPIED", call,
                               metadata=with_ids(merged, dest.datastore_id, dest.image_set_id),
                               demote=demote if not dest_info else [])
            src = source.latest
            restore = {"state": src.state, "status": src.status, "message": src.message}
            # The copy moves the source's updatedAt (CLI copy-image-set example: the source's
            # updatedAt is the copy's time); its state returns, quietly, when the copy is done.
            src.state, src.status = LOCKED, "COPYING_WITH_READ_ONLY_ACCESS"
            src.updated_at = version.updated_at
            src.pending = dict(restore, due_at=version.pending["due_at"], polls=0, quiet=True)
            self._track(source)
            self._save_image_set(dest)
            self._save_image_set(source, [src])
            self._image_set_event(dest, version, sourceImageSetArn=image_set_arn(
                self.events.region, source.datastore_id, source.image_set_id))
            self._image_set_event(source, src)
            return {"datastoreId": source.datastore_id,
                    "sourceImageSetProperties": self._copy_props(source, call),
                    "destinationImageSetProperties": self._copy_props(dest, call)}

    def _primaries_in_the_way(self, source: ImageSet, content: dict[str, Any]):
        """promoteToPrimary onto a study that already has a primary image set: the ones to
        demote (promote_onto_primary=demote_existing) or the copy's failure message."""
        study = content.get("Study", {}).get("DICOM", {}).get("StudyInstanceUID")
        others = [s.image_set_id for s in self.study_image_sets(source.datastore_id, study)]
        if not others:
            return [], None
        if self.behaviours.promote_onto_primary == "demote_existing":
            return others, None
        return [], ("INVALID_REQUEST: promoteToPrimary: the study already has a primary image "
                    "set")

    def _copy_props(self, image_set: ImageSet, call: Call) -> dict[str, Any]:
        props = image_set.properties(image_set.latest, call.region)
        return {"imageSetId": props["imageSetId"], "latestVersionId": props["versionId"],
                "imageSetState": props["imageSetState"],
                "imageSetWorkflowStatus": props["imageSetWorkflowStatus"],
                "createdAt": props["createdAt"], "updatedAt": props["updatedAt"],
                "imageSetArn": props["imageSetArn"]}

    @staticmethod
    def _copiable(source: ImageSet, copies: dict[str, Any] | None) -> dict[str, Any]:
        """The source content, restricted to the instances ``copiableAttributes`` selects."""
        doc = copy.deepcopy(source.latest.metadata)
        if not copies:
            return doc
        try:
            wanted = json.loads(copies["copiableAttributes"])
            selection = wanted["Study"]["Series"]
            assert isinstance(selection, dict)
        except (ValueError, KeyError, TypeError, AssertionError):
            raise validation("copiableAttributes must be a JSON document selecting "
                             "Study.Series.<uid>.Instances.<uid>") from None
        series_out = {}
        for suid, chosen in selection.items():
            series = doc["Study"]["Series"].get(suid)
            if series is None:
                raise validation("copiableAttributes names a series the source does not have")
            instances = (chosen or {}).get("Instances") or {}
            if instances:
                unknown = set(instances) - set(series["Instances"])
                if unknown:
                    raise validation("copiableAttributes names an instance the source does "
                                     "not have")
                series = dict(series, Instances={k: v for k, v in series["Instances"].items()
                                                 if k in instances})
            series_out[suid] = series
        doc["Study"]["Series"] = series_out
        return doc

    @staticmethod
    def _merge(dest: dict[str, Any], content: dict[str, Any], force: bool):
        """Destination + copied instances; a Patient/Study/Series mismatch needs force."""
        merged = copy.deepcopy(dest)
        problem = None
        for level in ("Patient", "Study"):
            if dest.get(level, {}).get("DICOM") != content.get(level, {}).get("DICOM") \
                    and not force:
                problem = (f"INVALID_REQUEST: {level} of SourceImageSet and "
                           f"DestinationImageSet don't match")
        for suid, series in content["Study"]["Series"].items():
            mine = merged["Study"]["Series"].get(suid)
            if mine is None:
                merged["Study"]["Series"][suid] = copy.deepcopy(series)
                continue
            if mine.get("DICOM") != series.get("DICOM") and not force:
                problem = "INVALID_REQUEST: Series of SourceImageSet and DestinationImageSet " \
                          "don't match"
            mine.setdefault("Instances", {}).update(copy.deepcopy(series["Instances"]))
        return merged, problem

    # -------------------------------------------------------------------- DeleteImageSet
    def delete_image_set(self, p: dict[str, Any], call: Call) -> dict[str, Any]:
        with self.lock:
            self._advance()
            image_set = self._image_set(p["datastoreId"], p["imageSetId"])
            latest = image_set.latest
            already = latest.state == DELETED or latest.status == "DELETING"
            if already and self.behaviours.delete_deleted == "ok":
                return self._delete_output(image_set)
            self._check_writable(image_set, None)
            latest.state, latest.status = LOCKED, "DELETING"
            self._schedule(image_set, latest, DELETED, "DELETED", call, deleted=True,
                           message=latest.message)
            self._save_image_set(image_set, [latest])
            self._image_set_event(image_set, latest)
            return self._delete_output(image_set)

    @staticmethod
    def _delete_output(image_set: ImageSet) -> dict[str, Any]:
        return {"datastoreId": image_set.datastore_id, "imageSetId": image_set.image_set_id,
                "imageSetState": image_set.latest.state,
                "imageSetWorkflowStatus": image_set.latest.status}

