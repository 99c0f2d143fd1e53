"""Spec files → validated :class:`reconciler.spec.types.Spec` objects, or every problem at once.

``validate``, ``plan`` and ``apply`` all start here, and nothing may be sent while any spec is
bad, so this module finds the files (:func:`discover`), reads each one with the checked YAML
loader, and runs the passes in order — JSON Schema (structure), DICOM and HealthImaging rules
(:mod:`reconciler.spec.attributes`), target checks, then checks across specs (unique names, two specs
managing the same attribute of one image set). A file that fails to parse does not stop the
others from being checked; :class:`~reconciler.core.errors.SpecError` carries every diagnostic,
sorted by file and line.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..core.canonical import digest
from ..core.errors import Diagnostic, SpecError
from ..dicom import dictionary
from ..dicom.paths import attribute_path, containers, instance_path, series_path
from . import schemacheck
from .attributes import build_attributes
from .config import Config
from .tables import TABLE_KIND, build_table
from .types import Attribute, Position, Spec, Target
from .yamlload import Document, load_file, render_path

log = logging.getLogger(__name__)

SPEC_SCHEMA = "spec.v1.schema.json"
SPEC_SUFFIXES = (".yaml", ".yml")
CONFIG_NAME = "reconciler.yaml"   # never a spec, even a nested project's


# --------------------------------------------------------------------------------------------
# Finding the files
# --------------------------------------------------------------------------------------------
def discover(paths: list[str], config: Config) -> list[Path]:
    """The spec files named by ``paths`` (files, or directories searched recursively for
    ``*.yaml`` / ``*.yml``, skipping hidden directories and files and config files); with
    no paths, the config's ``specs``. Raises :class:`SpecError` for paths that do not exist."""
    files, problems = _discover(paths, config)
    if problems:
        raise SpecError(problems)
    return files


def _discover(paths: list[str], config: Config) -> tuple[list[Path], list[Diagnostic]]:
    roots = [Path(p) for p in paths] if paths else list(config.specs)
    config_file = config.path.resolve() if config.path is not None else None
    found: list[Path] = []
    problems: list[Diagnostic] = []
    seen: set[Path] = set()
    for root in roots:
        if not root.exists():
            problems.append(Diagnostic(str(root), 1, 1, "", "no such file or directory"))
            continue
        # A file named explicitly is a spec whatever its name; a directory is searched.
        candidates = [root] if not root.is_dir() else [
            f for f in _walk(root) if f.resolve() != config_file and f.name != CONFIG_NAME]
        for file in candidates:
            resolved = file.resolve()
            if resolved not in seen:
                seen.add(resolved)
                found.append(file)
    return found, problems


def covers_project(paths: list[str], config: Config) -> bool:
    """Whether the spec files ``paths`` name include every spec file of the project (the
    ``specs`` of reconciler.yaml): only then is a spec the state knows and they lack a spec
    that was removed. No paths: the project's own."""
    if not paths:
        return True
    named = {f.resolve() for f in _discover(paths, config)[0]}
    return all(f.resolve() in named for f in _discover([], config)[0])


def _walk(root: Path) -> Iterable[Path]:
    for directory, subdirs, files in os.walk(root):
        subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith(".") and name.lower().endswith(SPEC_SUFFIXES):
                yield Path(os.path.normpath(os.path.join(directory, name)))


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------
def load_specs(paths: list[str], config: Config, *,
               warnings: list[Diagnostic] | None = None) -> list[Spec]:
    """Load and validate every spec the paths name. Raises :class:`SpecError` with all the
    problems of all files. Warnings (e.g. retired keywords) go to ``warnings`` when a list is
    given, else to the log (they name files and keys, never values)."""
    files, problems = _discover(paths, config)
    found_warnings: list[Diagnostic] = []
    specs: list[tuple[Spec, Position]] = []   # with where its name is written
    rank = {str(f): i for i, f in enumerate(files)}
    for file in files:
        documents, file_problems = load_file(file, str(file))
        problems += file_problems
        for doc in documents:
            if isinstance(doc.data, dict) and doc.data.get("kind") == TABLE_KIND:
                rows, errors, doc_warnings = build_table(
                    doc, lambda row: _checked_build(row, config))
                problems += errors
                found_warnings += doc_warnings
                specs += rows
                continue
            spec, errors, doc_warnings = _checked_build(doc, config)
            problems += errors
            found_warnings += doc_warnings
            if spec is not None:
                specs.append((spec, doc.position(("metadata", "name"))))
    problems += _check_names(specs)
    problems += check_overlaps((s, s.target.datastore_id, s.target.image_set_id)
                               for s, _ in specs if s.target.image_set_id and s.target.datastore_id)
    if warnings is not None:
        warnings.extend(found_warnings)
    else:
        for warning in found_warnings:
            log.warning("%s", warning)
    if problems:
        problems.sort(key=lambda d: (rank.get(d.file, -1), d.line, d.column))
        raise SpecError(problems)
    return [spec for spec, _ in specs]


def _checked_build(doc: Document, config: Config) -> tuple[Spec | None, list, list]:
    try:
        return build_spec(doc, config)
    except Exception as exc:  # a safety net: the property tests assert it never fires
        start = doc.start
        return None, [Diagnostic(doc.file, start.line, start.column, "",
                                 f"internal error while checking this document "
                                 f"({type(exc).__name__}); please report it")], []


# Fields that are strings whatever YAML thinks: `imageSetId: 1234...` or `DICOMStudyId: 17`.
def _string_fields(data: dict[str, Any]) -> Iterable[tuple]:
    yield ("metadata", "name")
    labels = (data.get("metadata") or {}).get("labels") if isinstance(data.get("metadata"),
                                                                       dict) else None
    for key in labels if isinstance(labels, dict) else ():
        yield ("metadata", "labels", key)
    target = data.get("target") if isinstance(data.get("target"), dict) else {}
    yield ("target", "datastoreId")
    yield ("target", "imageSetId")
    selector = target.get("selector")
    for key in selector if isinstance(selector, dict) else ():
        if key != "isPrimary":
            yield ("target", "selector", key)


def _coerce_strings(doc: Document) -> None:
    for path in _string_fields(doc.data):
        text = doc.source_text(path)
        if text is not None:
            parent = doc.data
            for part in path[:-1]:
                parent = parent[part]
            parent[path[-1]] = text


def build_spec(doc: Document, config: Config) -> tuple[Spec | None, list[Diagnostic],
                                                      list[Diagnostic]]:
    """One document → (the Spec or None, errors, warnings). The Spec is returned even when
    there are errors if its name and target are usable, so that checks across specs still
    run; callers must not use it when there are errors."""
    if isinstance(doc.data, dict):
        _coerce_strings(doc)
    errors, flagged = schemacheck.check(doc, doc.data, SPEC_SCHEMA,
                                        attribute_key_hint=dictionary.standard_tag_problem)
    data = doc.data
    if not isinstance(data, dict):
        return None, errors, []
    force = data.get("force") is True
    walk = build_attributes(doc, flagged, force)
    errors += walk.errors
    warnings = walk.warnings
    target = _target(doc, data, config, errors)

    if force and not walk.force_reasons:
        warnings.append(doc.diagnostic(("force",), "force: true, but nothing in this spec "
                                       "needs it; without it HealthImaging keeps checking the "
                                       "update", at_key=True))
    include = data.get("includeStudyImageSets") is True
    if include and not (walk.attributes.patient or walk.attributes.study):
        warnings.append(doc.diagnostic(("includeStudyImageSets",), "includeStudyImageSets: true, "
                                       "but this spec declares no Patient or Study attribute",
                                       at_key=True))
    if walk.force_reasons and target is not None and target.selector \
            and target.selector.get("isPrimary") is True:
        path, reason = walk.force_reasons[0]
        errors.append(doc.diagnostic(path, f"{reason} needs force, which HealthImaging does not "
                                     "allow on primary image sets (target.selector.isPrimary "
                                     "is true)", at_key=True))

    metadata = data.get("metadata") if isinstance(data.get("metadata"), dict) else {}
    name = metadata.get("name")
    if not isinstance(name, str) or target is None:
        return None, errors, warnings
    labels = metadata.get("labels")
    labels = {str(k): v for k, v in labels.items() if isinstance(v, str)} \
        if isinstance(labels, dict) else {}
    spec = Spec(name=name, target=target, attributes=walk.attributes, position=doc.start,
                digest="", labels=labels, force=force,
                include_study_image_sets=include)
    spec.digest = spec_digest(spec)
    return spec, errors, warnings


def _target(doc: Document, data: dict[str, Any], config: Config,
            errors: list[Diagnostic]) -> Target | None:
    target = data.get("target")
    if not isinstance(target, dict):
        return None
    datastore = target.get("datastoreId")
    datastore = datastore if isinstance(datastore, str) else None
    if "datastoreId" not in target and config.datastore_id is None:
        errors.append(doc.diagnostic(("target",), "no data store: set target.datastoreId, or "
                                     "datastoreId in reconciler.yaml", at_key=True))
    image_set = target.get("imageSetId")
    selector = target.get("selector")
    return Target(datastore_id=datastore or config.datastore_id,
                  image_set_id=image_set if isinstance(image_set, str) else None,
                  selector=dict(selector) if isinstance(selector, dict) else None,
                  allow_empty=target.get("allowEmpty") is True)


def spec_digest(spec: Spec) -> str:
    """sha256 of the spec's canonical JSON: sorted keys, compact, values in the service's
    form (so ``5.0`` and ``"5.0"`` hash alike, ``5.0`` and ``5.00`` do not), the data store
    default from reconciler.yaml applied. A plan compares it to detect a changed spec."""
    def attributes(items: dict[str, Attribute]) -> dict[str, Any]:
        return {k: {"vr": a.vr, "value": a.value} if a.private else a.value
                for k, a in items.items()}

    series: dict[str, Any] = {}
    for uid, s in spec.attributes.series.items():
        entry: dict[str, Any] | None = None if s.absent else attributes(s.attributes)
        if entry is not None and s.instances:
            entry["Instances"] = {i: None if inst.absent else attributes(inst.attributes)
                                  for i, inst in s.instances.items()}
        series[uid] = entry
    t = spec.target
    canonical = {
        "apiVersion": "reconciler/v1", "kind": "ImageSetMetadata",
        "metadata": {"name": spec.name, "labels": dict(spec.labels)},
        "target": {"datastoreId": t.datastore_id, "imageSetId": t.image_set_id,
                   "selector": t.selector, "allowEmpty": t.allow_empty},
        "force": spec.force, "includeStudyImageSets": spec.include_study_image_sets,
        "attributes": {"Patient": attributes(spec.attributes.patient),
                       "Study": attributes(spec.attributes.study), "Series": series},
    }
    return digest(canonical)


# --------------------------------------------------------------------------------------------
# Across specs
# --------------------------------------------------------------------------------------------
def _check_names(specs: list[tuple[Spec, Position]]) -> list[Diagnostic]:
    first: dict[str, Position] = {}
    problems = []
    for spec, where in specs:
        if spec.name in first:
            earlier = first[spec.name]
            problems.append(Diagnostic(where.file, where.line, where.column, "metadata.name",
                                       f"duplicate spec name {spec.name}; first defined at "
                                       f"{earlier.file}:{earlier.line}"))
        else:
            first[spec.name] = where
    return problems


def managed_positions(spec: Spec) -> dict[str, tuple[Position, str]]:
    """Managed path (as :meth:`DesiredAttributes.managed_paths`) → (where it is declared,
    the path as diagnostics write it)."""
    out: dict[str, tuple[Position, str]] = {}
    desired = spec.attributes
    for level, items in (("Patient", desired.patient), ("Study", desired.study)):
        for key, a in items.items():
            out[attribute_path(level, key)] = (a.position, render_path(("attributes", level, key)))
    for suid, series in desired.series.items():
        base = ("attributes", "Series", suid)
        out[series_path(suid)] = (series.position, render_path(base))
        for key, a in series.attributes.items():
            out[series_path(suid, key)] = (a.position, render_path(base + (key,)))
        for sop, inst in series.instances.items():
            ibase = base + ("Instances", sop)
            out[instance_path(suid, sop)] = (inst.position, render_path(ibase))
            for key, a in inst.attributes.items():
                out[instance_path(suid, sop, key)] = (a.position, render_path(ibase + (key,)))
    managed = set(desired.managed_paths())
    return {p: v for p, v in out.items() if p in managed}


def check_overlaps(assignments: Iterable[tuple[Spec, str, str]]) -> list[Diagnostic]:
    """Two specs that manage the same attribute of the same image set (or one removes a
    series or instance whose attributes the other manages). Each problem is reported at the
    later spec's declaration, naming the earlier spec. The planner calls this once selectors
    are resolved; :func:`load_specs` calls it for explicit ``imageSetId`` targets."""
    by_image_set: dict[tuple[str, str], list[Spec]] = defaultdict(list)
    for spec, datastore_id, image_set_id in assignments:
        specs = by_image_set[(datastore_id, image_set_id)]
        if all(other is not spec and other.name != spec.name for other in specs):
            specs.append(spec)
    problems: list[Diagnostic] = []
    for (_, image_set_id), specs in by_image_set.items():
        if len(specs) < 2:
            continue
        owners: dict[str, tuple[Spec, Position]] = {}
        inside: dict[str, list[str]] = defaultdict(list)   # container path → paths within
        for spec in specs:
            mine = managed_positions(spec)
            for path, (where, shown) in mine.items():
                clashes = [p for p in [path, *containers(path), *inside.get(path, [])]
                           if p in owners]
                if clashes:
                    other, there = owners[clashes[0]]
                    problems.append(Diagnostic(
                        where.file, where.line, where.column, shown,
                        f"also managed by spec {other.name} at {there.file}:{there.line} "
                        f"(image set {image_set_id})"))
            for path, (where, _) in mine.items():
                owners.setdefault(path, (spec, where))
                for container in containers(path):
                    inside[container].append(path)
    return problems
