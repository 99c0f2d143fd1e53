"""The desired state as the engine sees it: validated specs, with source positions.

``reconciler.spec.loader`` builds these from YAML (and reports every problem with file, line and
path); the planner, applier and drift checker only read them. Values are already in the form
HealthImaging uses in its metadata JSON for the attribute's VR:

* string VRs (PN, LO, DA, UI, IS, DS, …): ``str``; ``""`` is present-but-empty;
* binary numeric VRs (US, SS, UL, SL, FL, FD, …): ``int`` / ``float``;
* multi-valued attributes: ``list`` of the above;
* sequences (SQ): ``list`` of ``dict`` items keyed by keyword;
* ``None``: the attribute must be **absent** (removed if present).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..data.service_facts import PATIENT, STUDY
from ..dicom.paths import attribute_path, instance_path, series_path


@dataclass(frozen=True, slots=True)
class Position:
    file: str
    line: int     # 1-based
    column: int   # 1-based


@dataclass(frozen=True, slots=True)
class Attribute:
    """One declared attribute. ``key`` is the DICOM keyword, or the 8-hex-digit tag of a private
    attribute (upper case, as HealthImaging keys them)."""

    key: str
    value: Any
    vr: str
    position: Position
    private: bool = False

    @property
    def absent(self) -> bool:
        return self.value is None


@dataclass(slots=True)
class InstanceSpec:
    uid: str
    position: Position
    absent: bool = False                      # the spec says `null`: the instance must not exist
    attributes: dict[str, Attribute] = field(default_factory=dict)


@dataclass(slots=True)
class SeriesSpec:
    uid: str
    position: Position
    absent: bool = False                      # the spec says `null`: the series must not exist
    attributes: dict[str, Attribute] = field(default_factory=dict)
    instances: dict[str, InstanceSpec] = field(default_factory=dict)


@dataclass(slots=True)
class DesiredAttributes:
    """The maps of a table row's spec that are empty are one read-only mapping shared by all
    rows (:data:`reconciler.spec.tables.EMPTY`): read these maps, never change a spec's."""

    patient: dict[str, Attribute] = field(default_factory=dict)
    study: dict[str, Attribute] = field(default_factory=dict)
    series: dict[str, SeriesSpec] = field(default_factory=dict)

    def managed_paths(self) -> list[str]:
        """Every managed item as a stable path string, e.g. ``Patient.PatientName``,
        ``Series[1.2.3].SeriesDescription``, ``Series[1.2.3].Instances[1.2.3.4]`` (the instance's
        presence), used for overlap checks, state hashes and ignore rules."""
        paths = [attribute_path(PATIENT, k) for k in self.patient]
        paths += [attribute_path(STUDY, k) for k in self.study]
        for suid, series in self.series.items():
            if series.absent:
                paths.append(series_path(suid))
                continue
            paths.extend(series_path(suid, k) for k in series.attributes)
            for sop, inst in series.instances.items():
                if inst.absent:
                    paths.append(instance_path(suid, sop))
                else:
                    paths.extend(instance_path(suid, sop, k) for k in inst.attributes)
        return paths


@dataclass(frozen=True, slots=True)
class Target:
    datastore_id: str | None          # None: take reconciler.yaml's datastoreId
    image_set_id: str | None = None   # exactly one of image_set_id / selector
    selector: dict[str, Any] | None = None   # SearchImageSets EQUAL filters, ANDed
    allow_empty: bool = False


@dataclass(slots=True)
class Spec:
    name: str
    target: Target
    attributes: DesiredAttributes
    position: Position                # the document's first key
    digest: str                       # sha256 of the document's canonical JSON form
    labels: dict[str, str] = field(default_factory=dict)   # a table's rows share one, read-only
    force: bool = False
    include_study_image_sets: bool = False

    def whole(self) -> Spec:
        """This spec as a :class:`Spec` (a table row's :class:`~.rows.RowSpec` makes one), for
        :func:`dataclasses.replace`."""
        return self
