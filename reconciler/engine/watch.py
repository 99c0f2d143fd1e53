"""``reconciler watch``: continuous reconciliation from HealthImaging's events (docs/watch.md).

The loop (:func:`run`) takes messages from an SQS queue an EventBridge rule fills with
``aws.medical-imaging`` events and hands each event to the :class:`Watcher`:

* an image set the state manages (or a spec targets by id) was updated, copied into, reverted
  or deleted → a **targeted drift check** of that image set alone
  (:func:`reconciler.engine.drift.check_record`, the very check ``drift`` makes), reported as
  ``drift`` reports it. An event for a version the state records as ours, or for a version
  already checked (a duplicate, or one older than a version already checked: delivery is
  best effort and unordered), costs no read;
* a new image set (``Image Set Created`` / ``Copied``, or every image set after an ``Import Job
  Completed``) that a selector spec covers and the state does not know is **planned**; without
  ``self_heal`` it is reported ``not-applied``;
* with ``self_heal`` a drifted or not-applied image set is applied exactly as ``apply`` does
  (:func:`reconciler.engine.operations.apply_plan` under :func:`locked_state`: a plan pinned to
  the version read, conflict re-diff, wait and verification, a state record per image set,
  the quota pacer).

A message is deleted only after its event was handled and what it wrote was saved; when
handling fails the message stays, becomes visible again after the queue's visibility timeout,
and a message that keeps failing goes to the queue's dead-letter queue by its redrive policy.
A message that is not a HealthImaging event is logged by its id (never its body) and deleted.
Every ``resync_every`` the loop runs a full incremental ``drift`` as a backstop for lost events.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any, Callable, Protocol

from ..core import errors
from ..documents.types import DriftReport, PlanDocument, Report, ReportItem
from ..healthimaging.api import HealthImaging
from ..spec.types import Spec
from ..states import State, StateBackend
from . import service_events as se
from .applier import ApplyOptions
from .drift import (DRIFTED, IN_SYNC, MISSING, NOT_APPLIED, DriftItem, DriftOptions,
                    check_record, report_of)
from .operations import apply_plan, locked_state, report_failed, run_drift
from .outcomes import APPLIED, UNCHANGED
from .reading import resolve_targets

log = logging.getLogger(__name__)

OPEN = (DRIFTED, MISSING, NOT_APPLIED)     # what keeps `watch --once` from exiting 0
MAX_POLL = 5.0                             # seconds one receive may block (SIGTERM waits that)


class Output(Protocol):
    """Where the watcher reports, in the formats of the commands it stands for."""

    def drift(self, report: DriftReport) -> None: ...
    def planned(self, plan: PlanDocument) -> None: ...
    def apply_start(self, plan: PlanDocument) -> None: ...
    def apply_item(self, item: ReportItem) -> None: ...
    def apply_done(self, report: Report) -> None: ...


class Queue(Protocol):
    def receive(self, wait_seconds: float) -> list[Any]: ...
    def delete(self, message: Any) -> None: ...


MakePlan = Callable[[list[Spec], State, Any], PlanDocument]   # (specs, state, redactor)


@dataclass
class WatchOptions:
    self_heal: bool = False
    lock_timeout: float = 60.0       # a watcher waits for another run's lock, then retries later
    default_datastore: str | None = None
    apply: ApplyOptions = field(default_factory=ApplyOptions)
    drift: DriftOptions = field(default_factory=lambda: DriftOptions(use_checkpoint=True))


def _number(version: str | None) -> int | None:
    return int(version) if version is not None and str(version).isdigit() else None


class Watcher:
    """Handles one event at a time; remembers, per image set, the newest version it checked."""

    def __init__(self, hi: HealthImaging, backend: StateBackend, specs: list[Spec], *,
                 is_ignored: Callable[[str, str], bool], make_redactor: Callable[[State], Any],
                 make_plan: MakePlan, output: Output, options: WatchOptions | None = None):
        self.hi, self.backend, self.specs = hi, backend, specs
        self.is_ignored, self.make_redactor, self.make_plan = is_ignored, make_redactor, make_plan
        self.output, self.options = output, options or WatchOptions()
        self.checked: dict[str, int] = {}            # image set id → newest version handled
        self.deleted: set[str] = set()
        self.jobs: set[str] = set()
        self.open: dict[tuple[str, str], str] = {}   # (spec, image set) → drifted/missing/...
        self.errors = 0                              # failures not tied to a message
        self.failed: set[str] = set()                # messages whose last handling failed
        self._heal_lock = threading.Lock()

    # -- events ---------------------------------------------------------------------------
    def handle(self, ev: se.ServiceEvent) -> None:
        """Handle one event; raises a ReconcilerError when it could not be (keep the message)."""
        if ev.detail_type == se.IMPORT_COMPLETED:
            if ev.job_id not in self.jobs:
                self._new_image_sets(ev.datastore_id, None)
                if ev.job_id:
                    self.jobs.add(ev.job_id)
            return
        if ev.detail_type not in se.CHANGED or ev.image_set_id is None:
            return                   # in-between states (Updating, Copying...) change nothing
        image_set_id = ev.image_set_id
        if ev.detail_type == se.DELETED:
            if image_set_id in self.deleted:
                return
        elif ev.version is not None and self.checked.get(image_set_id, -1) >= ev.version:
            log.debug("%s: version already handled, no read", ev.describe())
            return
        state = self.backend.read() or State.new()
        managed = self._managed(state, ev.datastore_id, image_set_id)
        if managed:
            self._check(state, ev, managed)
        elif ev.detail_type in se.NEW:
            self._new_image_sets(ev.datastore_id, {image_set_id})
        if ev.detail_type == se.DELETED:
            self.deleted.add(image_set_id)
        elif ev.version is not None:
            self._saw(image_set_id, ev.version)

    def _saw(self, image_set_id: str, version: int | None) -> None:
        if version is not None and version > self.checked.get(image_set_id, -1):
            self.checked[image_set_id] = version

    def _managed(self, state: State, datastore_id: str | None,
                 image_set_id: str) -> list[tuple[Spec, Any]]:
        """(spec, its record or None) for every spec that manages the image set."""
        found = []
        for spec in self.specs:
            record = state.get(spec.name, image_set_id)
            if record is not None and record.datastore_id == datastore_id:
                found.append((spec, record))
            elif record is None and spec.target.image_set_id == image_set_id and \
                    (spec.target.datastore_id or self.options.default_datastore) == datastore_id:
                found.append((spec, None))
        return found

    def _check(self, state: State, ev: se.ServiceEvent, managed: list[tuple[Spec, Any]]) -> None:
        ours = [_number(r.version_after) for _, r in managed if r is not None]
        if (ev.detail_type != se.DELETED and ev.version is not None and ours
                and len(ours) == len(managed) and all(v is not None and v >= ev.version
                                                      for v in ours)):
            log.debug("%s: a version this product wrote (or older), no read", ev.describe())
            return
        redactor = self.make_redactor(state)
        items = []
        for spec, record in managed:
            if record is None:
                items.append(DriftItem(spec.name, ev.datastore_id, ev.image_set_id, NOT_APPLIED,
                                       reason="no apply recorded in the state"))
            else:
                items.append(check_record(self.hi, state, spec.name, record, self.is_ignored,
                                          redactor))
        self.output.drift(report_of(items, redactor, datetime.now(timezone.utc)))
        self._note(items)
        to_heal = [i.spec for i in items if i.status in (DRIFTED, NOT_APPLIED)]
        if self.options.self_heal and to_heal:
            self.heal(to_heal, ev.datastore_id, ev.image_set_id)   # raises: seen nothing
        for item in items:
            self._saw(ev.image_set_id, _number(item.live_version))

    def _note(self, items: list[DriftItem]) -> None:
        for item in items:
            if not item.image_set_id:
                continue
            key = (item.spec, item.image_set_id)
            if item.status in OPEN:
                self.open[key] = item.status
            else:
                self.open.pop(key, None)

    def _new_image_sets(self, datastore_id: str | None, wanted: set[str] | None) -> None:
        """Image sets a selector spec covers that the state does not know: planned, and
        applied with self_heal. ``wanted`` None: every such image set (an import finished)."""
        default = self.options.default_datastore
        selectors = [replace(s.whole(), target=replace(s.target, allow_empty=True))
                     for s in self.specs
                     if s.target.selector is not None
                     and (s.target.datastore_id or default) == datastore_id]
        if not selectors:
            return
        state = self.backend.read() or State.new()
        new: dict[str, list[str]] = {}
        listed: dict[str, int | None] = {}
        for a in resolve_targets(selectors, self.hi, default):
            if wanted is None and a.image_set_id in self.checked:
                continue         # its own event was handled (an import also sends Created)
            if (wanted is None or a.image_set_id in wanted) \
                    and state.get(a.spec.name, a.image_set_id) is None:
                new.setdefault(a.image_set_id, []).append(a.spec.name)
                listed[a.image_set_id] = _number(a.listed.version) if a.listed else None
        for image_set_id, names in sorted(new.items()):
            if self.options.self_heal:
                self.heal(names, datastore_id, image_set_id)
                self._saw(image_set_id, listed[image_set_id])
                continue
            self._saw(image_set_id, listed[image_set_id])
            narrowed = self._narrowed(names, datastore_id, image_set_id)
            redactor = self.make_redactor(state)
            self.output.planned(self.make_plan(narrowed, state, redactor))
            items = [DriftItem(name, datastore_id, image_set_id, NOT_APPLIED,
                               reason="a new image set the selector covers; no apply recorded "
                                      "in the state")
                     for name in names]
            self.output.drift(report_of(items, redactor, datetime.now(timezone.utc)))
            self._note(items)

    # -- writes ---------------------------------------------------------------------------
    def _narrowed(self, names: list[str], datastore_id: str | None,
                  image_set_id: str | None) -> list[Spec]:
        """The named specs, each aimed at this one image set only (same digest: the records
        are those of the spec); all of them when ``image_set_id`` is None."""
        chosen = [s for s in self.specs if s.name in set(names)]
        if image_set_id is None:
            return chosen
        return [replace(s.whole(), target=replace(s.target, datastore_id=datastore_id,
                                          image_set_id=image_set_id, selector=None))
                for s in chosen]

    def heal(self, names: list[str], datastore_id: str | None,
             image_set_id: str | None) -> Report:
        """Apply the named specs to one image set (or wholly) as ``apply`` does. Raises when the
        image set cannot be planned or an update did not succeed."""
        specs = self._narrowed(names, datastore_id, image_set_id)
        with self._heal_lock, locked_state(self.backend, "watch",
                                           self.options.lock_timeout) as state:
            plan = self.make_plan(specs, state, self.make_redactor(state))
            if plan["summary"]["error"]:
                self.output.planned(plan)
                raise errors.ReconcilerError(
                    f"image set {image_set_id or '(several)'}: "
                    f"{plan['summary']['error']} plan error(s); nothing applied")
            self.output.apply_start(plan)
            report = apply_plan(plan, specs, self.hi, self.backend, state,
                                replace(self.options.apply), False,
                                on_result=self.output.apply_item)
        self.output.apply_done(report)
        for item in report["image_sets"]:
            if item["status"] in (APPLIED, UNCHANGED) and item["image_set_id"]:
                self.open.pop((item["spec"], item["image_set_id"]), None)
                self._saw(item["image_set_id"], _number(item["version_after"]))
        if report_failed(report):
            raise errors.ReconcilerError(f"image set {image_set_id or '(several)'}: the "
                                         f"self-heal apply did not succeed")
        return report

    # -- the backstop ---------------------------------------------------------------------
    def resync(self) -> None:
        """A full incremental drift (saving its checkpoint); with self_heal, heal what it found."""
        report = run_drift(self.hi, self.backend, self.specs, self.is_ignored,
                           self.make_redactor, self.options.drift, self.options.lock_timeout)
        self.output.drift(report)
        for entry in report["image_sets"]:
            if entry["status"] in OPEN:
                self.open[(entry["spec"], entry["image_set_id"] or "")] = entry["status"]
            elif entry["status"] == IN_SYNC and entry["image_set_id"]:
                self.open.pop((entry["spec"], entry["image_set_id"]), None)
        if not self.options.self_heal:
            return
        for entry in report["image_sets"]:
            if entry["status"] in (DRIFTED, NOT_APPLIED):
                try:
                    self.heal([entry["spec"]], entry["datastore_id"], entry["image_set_id"])
                    self.open.pop((entry["spec"], entry["image_set_id"] or ""), None)
                except errors.ReconcilerError as exc:
                    self.errors += 1
                    log.error("resync: spec %s: %s", entry["spec"], exc)

    def exit_code(self) -> int:
        if self.errors or self.failed:
            return errors.EXIT_ERROR
        return errors.EXIT_CHANGES if self.open else errors.EXIT_OK


def process(watcher: Watcher, queue: Queue, message: Any) -> bool:
    """One message: parse, handle, delete once handled. False when it stays in the queue."""
    ev = se.parse(message.body)
    if ev is None:
        log.warning("message %s is not a HealthImaging event this watcher knows; deleted "
                    "without acting on it", message.message_id)
        queue.delete(message)
        return True
    try:
        watcher.handle(ev)
    except Exception as exc:  # noqa: BLE001 - one bad event must not stop the watcher
        watcher.failed.add(message.message_id)
        # A domain error's text names ids and codes only; anything else is named by its type.
        why = exc if isinstance(exc, errors.ReconcilerError) else type(exc).__name__
        log.error("message %s, %s: %s; left in the queue (received %d times; its redrive "
                  "policy moves it to the dead-letter queue)", message.message_id,
                  ev.describe(), why, getattr(message, "receive_count", 1))
        return False
    queue.delete(message)
    watcher.failed.discard(message.message_id)     # a retry that succeeded is no error
    return True


@dataclass
class LoopOptions:
    once: bool = False
    wait: float = 5.0                  # --once: exit when the queue was empty this long
    resync_every: float | None = 6 * 3600.0
    clock: Callable[[], float] = time.monotonic


def run(watcher: Watcher, queue: Queue, options: LoopOptions, stop: threading.Event) -> int:
    """Receive and handle until ``stop`` is set (exit 0) or, with ``once``, until the queue has
    been empty for ``wait`` seconds (the watcher's exit code)."""
    clock = options.clock
    last_seen = clock()
    next_resync = clock() + options.resync_every if options.resync_every else None
    while not stop.is_set():
        if next_resync is not None and clock() >= next_resync:
            try:
                watcher.resync()
            except errors.ReconcilerError as exc:
                watcher.errors += 1
                log.error("resync: %s", exc)
            next_resync = clock() + (options.resync_every or 0)
        poll = MAX_POLL if next_resync is None else max(0.0, min(MAX_POLL,
                                                                  next_resync - clock()))
        if options.once:
            remaining = options.wait - (clock() - last_seen)
            if remaining <= 0:
                break
            poll = min(remaining, MAX_POLL)
        try:
            messages = queue.receive(poll)
        except errors.ReconcilerError as exc:
            watcher.errors += 1
            log.error("receiving from the queue: %s", exc)
            if options.once:
                break
            stop.wait(MAX_POLL)
            continue
        if not messages:
            if poll < 1:                  # SQS waits in whole seconds
                stop.wait(poll)
            continue
        last_seen = clock()
        for message in messages:
            if stop.is_set():             # not handled: visible again after its timeout
                break
            process(watcher, queue, message)
    if stop.is_set():
        return errors.EXIT_OK
    return watcher.exit_code()
