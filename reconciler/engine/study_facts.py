"""What a plan keeps of each image set's study while it reads (the document itself is dropped
after its diff), for the study updates made once every image set is read
(:mod:`.study_updates`)."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Iterable

from ..healthimaging.api import ImageSet
from ..spec.types import Spec
from .diff import Change
from .payloads import schema_version_of

# (Patient keys, Study keys) a plan's specs manage: what StudyFacts keeps of each image set.
Keep = tuple[frozenset[str], frozenset[str]]


@dataclass(slots=True)
class StudyFacts:
    study_uid: str | None
    is_primary: bool | None
    patient: dict[str, Any] | None = None   # the Patient and Study DICOM maps (None: empty)
    study: dict[str, Any] | None = None
    version_id: str | None = None
    schema_version: Any = 1.1


class StudyIndex:
    """What the planner saw of each image set's study while it held the pinned metadata (the
    document itself is dropped after its diff), and the study-level changes each entry leaves
    to a study update. Thread-safe: plan reads run in parallel."""

    def __init__(self, specs: Iterable[Spec] | None = None, *,
                 remember_studies: bool = True) -> None:
        # Of each image set only the Patient and Study keys some spec manages are kept (a
        # study update diffs those alone): the whole maps were ~2 KB an image set, held for
        # every image set of the plan.
        specs = None if specs is None else list(specs)
        self.keep: Keep | None = None if specs is None else (
            frozenset(k for s in specs for k in s.attributes.patient),
            frozenset(k for s in specs for k in s.attributes.study))
        self._facts: dict[str, StudyFacts] = {}
        # (spec name, image set id) -> (spec, the changes deferred, its own changes or None)
        self._pending: dict[tuple[str, str], tuple[Spec, list[Change], list[Change] | None]] = {}
        # Of settled image sets, their study only (for the plan's limits, which count studies:
        # kept only when ``remember_studies``).
        self._uids: dict[str, str | None] = {}
        self._remember = remember_studies
        self._lock = threading.Lock()

    def read(self, image_set: ImageSet, metadata: dict[str, Any]) -> StudyFacts:
        """What a study update would need of an image set just read (its document is dropped
        after its diff). Nothing of it is kept here but its study, and only when remembering
        studies: :meth:`defer` keeps the facts of an image set that leaves changes to a study
        update, the only ones a study update reads (it reads the peers it adds itself). A
        plan of 100,000 image sets read again, unchanged, held them all (~0.5 KB each)."""
        facts = facts_of(image_set.is_primary, image_set.version_id, metadata, self.keep)
        if self._remember:
            with self._lock:
                self._uids[image_set.image_set_id] = facts.study_uid
        return facts

    def defer(self, spec: Spec, image_set_id: str, changes: list[Change],
              own: list[Change], facts: StudyFacts) -> None:
        """``changes`` go to the study update; ``own`` (below the study) travel in the same
        request when this entry leads it, else in the entry's own, after it. ``facts``: what
        :meth:`read` made of the image set."""
        with self._lock:
            self._pending[(spec.name, image_set_id)] = (spec, changes, own or None)
            self._facts[image_set_id] = facts

    def own(self, spec_name: str, image_set_id: str) -> list[Change]:
        with self._lock:
            pending = self._pending.get((spec_name, image_set_id))
            return list(pending[2] or ()) if pending is not None else []

    def get(self, image_set_id: str) -> StudyFacts | None:
        with self._lock:
            return self._facts.get(image_set_id)

    def deferred(self, spec_name: str, image_set_id: str) -> tuple[Spec, list[Change]] | None:
        with self._lock:
            pending = self._pending.get((spec_name, image_set_id))
            return pending[:2] if pending is not None else None

    def study_uid(self, image_set_id: str) -> str | None:
        """The StudyInstanceUID of an image set read, settled or not (when remembering)."""
        with self._lock:
            facts = self._facts.get(image_set_id)
            return facts.study_uid if facts is not None else self._uids.get(image_set_id)

    def settle(self, planned: Iterable[tuple[str, str]]) -> None:
        """Forget what the study update of these (spec name, image set id)s needed, once it is
        planned: of each image set only its StudyInstanceUID stays (:meth:`study_uid`; the
        plan's limits count studies). At 100,000 image sets the facts are ~0.7 KB each."""
        with self._lock:
            for name, image_set_id in planned:
                self._pending.pop((name, image_set_id), None)
                facts = self._facts.pop(image_set_id, None)
                if facts is not None and self._remember:
                    self._uids[image_set_id] = facts.study_uid


def facts_of(is_primary: bool | None, version_id: str | None,
             metadata: dict[str, Any], keep: Keep | None = None) -> StudyFacts:
    """What a study update needs of one image set's metadata; of the Patient and Study maps
    only the keys in ``keep`` (Patient keys, Study keys) when it is given."""
    study = metadata.get("Study") if isinstance(metadata.get("Study"), dict) else {}
    study_dicom = study.get("DICOM") if isinstance(study.get("DICOM"), dict) else {}
    patient = metadata.get("Patient") if isinstance(metadata.get("Patient"), dict) else {}
    patient_dicom = patient.get("DICOM") if isinstance(patient.get("DICOM"), dict) else {}
    uid = study_dicom.get("StudyInstanceUID")
    if keep is not None:
        patient_dicom = {k: v for k, v in patient_dicom.items() if k in keep[0]}
        study_dicom = {k: v for k, v in study_dicom.items() if k in keep[1]}
    # An empty map is None (most image sets hold no managed Patient key: ~64 bytes each).
    return StudyFacts(uid if isinstance(uid, str) and uid else None, is_primary,
                      dict(patient_dicom) or None, dict(study_dicom) or None, version_id,
                      schema_version_of(metadata))
