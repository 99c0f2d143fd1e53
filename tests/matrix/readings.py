"""Readings: which answer the emulator gives to each detail AWS does not document.

A *reading* is a set of named behaviours (reconciler/emulator/behaviours.py ``CHOICES``) plus
the emulator's validation mode. The end-to-end tests run under one reading at a time, chosen
by the environment variable ``RECONCILER_TEST_READING``::

    RECONCILER_TEST_READING="stale_version_error=validation"
    RECONCILER_TEST_READING="primary_restricted_levels=patient_series,validation=sync"

Unset or empty: the defaults. Unknown names and values are refused (the registry's own check),
so a typo cannot silently run the defaults. ``tests/conftest.py`` parses it once per session
and every emulator the tests start gets it; the ``reading`` fixture hands it to tests that
assert reading-specific outcomes.

This module has no pytest dependency: ``run_matrix.py`` uses it to enumerate the matrix.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from typing import Any

from reconciler.emulator.behaviours import BY_NAME, CHOICES, BehaviourError, Behaviours

ENV = "RECONCILER_TEST_READING"
VALIDATION_MODES = ("async", "sync")

# One representative alternative for each free-form choice (the registry has no list of
# values for them). Each is chosen to change what a client sees in the e2e tests:
REPRESENTATIVE: dict[str, str] = {
    # the model's older limit (the API page's 10000): below the 30000 default, above every
    # attribute the example specs write, so it bites only payloads that are large on purpose
    "blob_max_bytes": "10000",
    # every list is paginated, one item a page: any caller that ignores nextToken loses items
    "default_page_size": "1",
    # a completed version shows in SearchImageSets 5 s late: longer than any test's own wait
    # for an update to finish, so a read-your-writes search sees the old version
    "search_index_lag": "5",
    # the translated throttling page's burst (only used with --quotas aws)
    "write_burst": "10",
    # a new data store stays CREATING for half a second (the e2e tests use the seeded one;
    # this reading checks nothing else depends on it being ACTIVE at once)
    "datastore_create_delay": "0.5",
}


# A behaviour that only acts when another one is on joins it in its reading (alone it would
# run the defaults again under another name).
REQUIRES: dict[str, str] = {
    "primary_restriction_include_study": "primary_restricted_levels=patient_series",
}


class ReadingError(ValueError):
    """A reading that names an unknown behaviour or a value it does not allow."""


@dataclass(frozen=True)
class Reading:
    behaviours: dict[str, str] = field(default_factory=dict)   # only the non-default ones
    validation: str = "async"

    @property
    def label(self) -> str:
        parts = [f"{k}={v}" for k, v in self.behaviours.items()]
        if self.validation != "async":
            parts.append(f"validation={self.validation}")
        return ",".join(parts) or "defaults"

    @property
    def is_default(self) -> bool:
        return not self.behaviours and self.validation == "async"

    def behaviour(self, name: str) -> Any:
        """The effective (parsed) value of a named behaviour under this reading."""
        if name not in BY_NAME:
            raise ReadingError(f"unknown behaviour {name!r}")
        return getattr(Behaviours(self.behaviours), name)

    def __str__(self) -> str:
        return self.label


def parse(text: str | None) -> Reading:
    """``"name=value[,name=value]"`` (``validation=sync|async`` included) → a Reading."""
    behaviours: dict[str, str] = {}
    validation = "async"
    for item in (text or "").replace(";", ",").split(","):
        item = item.strip()
        if not item or item == "defaults":
            continue
        name, sep, value = item.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not value:
            raise ReadingError(f"{ENV}: {item!r} is not name=value")
        if name == "validation":
            if value not in VALIDATION_MODES:
                raise ReadingError(f"{ENV}: validation must be one of "
                                   f"{', '.join(VALIDATION_MODES)}, got {value!r}")
            validation = value
            continue
        try:
            Behaviours({name: value})        # the registry's own check of name and value
        except BehaviourError as exc:
            raise ReadingError(f"{ENV}: {exc}") from None
        if name in behaviours:
            raise ReadingError(f"{ENV}: {name} given twice")
        behaviours[name] = value
    return Reading(behaviours, validation)


@functools.cache
def current() -> Reading:
    """This process's reading, from the environment (parsed once)."""
    return parse(os.environ.get(ENV))


def schema_version(reading: Reading) -> float | str:
    """The SchemaVersion a hand-made update document carries to be accepted under
    ``reading`` (the schema_version behaviour: any, number 1.1, or string "1.1")."""
    return "1.1" if reading.behaviour("schema_version") == "string" else 1.1


def refuses_instance_removal(reading: Reading) -> bool:
    """Whether removing an instance from a seeded image set can never succeed: under
    remove_instance_needs_force=true a removal needs force, which the service refuses on a
    primary image set (primary_force=refuse), and the seeds are primary (seed_primary)."""
    return (reading.behaviour("remove_instance_needs_force") == "true"
            and reading.behaviour("primary_force") == "refuse"
            and reading.behaviour("seed_primary") == "true")


def refuses_patient_changes(reading: Reading) -> bool:
    """Whether no Patient-level change can ever reach a seeded image set: the seeds are
    primary (seed_primary), the level is restricted on primary image sets
    (primary_restricted_levels is not off) and even a study-wide update does not lift it
    (primary_restriction_include_study=refused). Every writer is refused, reconciler and a
    second writer alike."""
    return (reading.behaviour("primary_restricted_levels") != "off"
            and reading.behaviour("primary_restriction_include_study") == "refused"
            and reading.behaviour("seed_primary") == "true")


def _without_block(text: str, key: str) -> str:
    """``text`` (a spec) without the ``attributes`` block ``key`` (a two-space-indented key
    and everything indented under it), comments and layout of the rest kept."""
    lines = text.splitlines(keepends=True)
    start = lines.index(f"  {key}:\n")
    end = start + 1
    while end < len(lines) and (not lines[end].strip() or lines[end].startswith("   ")):
        end += 1
    return "".join(lines[:start] + lines[end:])


def spec_for_reading(reading: Reading, text: str) -> str:
    """An example spec as the e2e tests that use it for something else (drift, rollback,
    faults, staleness) write it under ``reading``, so that they see specs the service accepts:

    * where the service refuses every instance removal on a primary image set
      (:func:`refuses_instance_removal`), nm-bone's removal of its lossy instance (a
      ``Series`` block holding nothing else, the spec's last block) is left out. The refusal
      itself is asserted by
      tests/apply/test_apply_e2e.py::test_the_example_instance_removal_under_each_reading;
    * where the service refuses every Patient-level change to a primary image set, even
      study-wide (:func:`refuses_patient_changes`), the ``Patient`` block (ct-small's and
      sc-deid's) is left out; their Study and Instance changes stay. (Under
      primary_restricted_levels=patient_study the Study level would be refused too; the
      matrix pairs ``refused`` with patient_series only, see REQUIRES.) The refusal itself, at
      plan when reconciler.yaml says so and from the service when it does not, is asserted by
      tests/apply/test_apply_e2e.py::test_patient_changes_to_primary_image_sets_under_each_reading,
      tests/apply/test_grouping_apply.py::test_a_patient_change_to_the_study_under_each_reading
      and tests/matrix/test_readings.py."""
    import yaml

    original = yaml.safe_load(text).get("attributes") or {}
    if refuses_patient_changes(reading) and "Patient" in original:
        text = _without_block(text, "Patient")
        assert (yaml.safe_load(text)["attributes"]
                == {k: v for k, v in original.items() if k != "Patient"}), "a Patient block cut"
    if not refuses_instance_removal(reading):
        return text
    series = (yaml.safe_load(text).get("attributes") or {}).get("Series") or {}
    if not series or any(set(body) != {"Instances"} or any(v is not None for v in
                         body["Instances"].values()) for body in series.values()):
        return text
    head, sep, _ = text.partition("\n  Series:\n")
    assert sep, "the Series block is the spec's last"
    cut = head + "\n"
    assert (yaml.safe_load(cut)["attributes"].keys()
            == yaml.safe_load(text)["attributes"].keys() - {"Series"})
    return cut


def alternatives() -> list[Reading]:
    """Every alternative value of every named behaviour, one reading each, enumerated from
    the registry (a new behaviour joins automatically; a new free-form one must be given a
    representative value in REPRESENTATIVE, or this fails)."""
    found = []
    for choice in CHOICES:
        if choice.values is not None:
            values = [v for v in choice.values if v != choice.default]
        else:
            if choice.name not in REPRESENTATIVE:
                raise ReadingError(f"free-form behaviour {choice.name} has no representative "
                                   "value: add one to REPRESENTATIVE in tests/matrix/readings.py")
            values = [REPRESENTATIVE[choice.name]]
        for value in values:
            prefix = f"{REQUIRES[choice.name]}," if choice.name in REQUIRES else ""
            found.append(parse(f"{prefix}{choice.name}={value}"))
    return found


def matrix() -> list[Reading]:
    """The whole matrix: the defaults, each alternative, and synchronous validation."""
    return [Reading(), *alternatives(), Reading(validation="sync")]


# Readings whose e2e subset is not reading-aware yet, label → why: the product's outcome under
# them is asserted by tests of their own (tests/matrix/test_readings.py, the refusal tests in
# tests/apply), but e2e tests still expect what the reading makes impossible. `make matrix`
# lists them as pending with the reason, and runs them with --all; CI runs the rest. None now:
# the example specs are written for the reading (spec_for_reading), and what the tests count
# or compare follows from it.
PENDING: dict[str, str] = {}


# The readings `make test` runs its compact lifecycle under (tests/matrix/test_readings.py):
# the ones the product is most exposed to — primary image sets, stale-version errors, a lagging
# search index, the schema version's type, synchronous validation.
CHEAP = [parse(text) for text in (
    "defaults",
    "primary_restricted_levels=off",
    "primary_restricted_levels=patient_study",
    "primary_restricted_levels=patient_series,primary_restriction_include_study=refused",
    "include_study_scope=all_levels",
    "stale_version_error=validation",
    "search_index_lag=5",
    "schema_version=string",
    "validation=sync",
)]


def emulator_options(reading: Reading, given: dict[str, Any]) -> dict[str, Any]:
    """ThreadedEmulator keyword arguments with the reading applied. What a test passes
    explicitly wins: a test that sets a behaviour or validation mode is about that setting."""
    options = dict(given)
    options["behaviours"] = {**reading.behaviours, **(given.get("behaviours") or {})}
    options.setdefault("validation", reading.validation)
    return options
