"""``reconciler watch``: continuous reconciliation from HealthImaging's EventBridge events on an
SQS queue (:mod:`reconciler.engine.watch`), reported as ``drift``, ``plan`` and ``apply`` report;
and :func:`lambda_handler`, the same watcher behind a Lambda SQS trigger (docs/watch.md)."""

from __future__ import annotations

import os
import re
import signal
import threading
from dataclasses import dataclass
from typing import Any

import click

from ..core import errors
from .base import GlobalOptions, cli, make_backend, make_plan, make_redactor, make_service
from .output import redact_option

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


def parse_duration(text: str) -> float | None:
    """``6h``, ``30m``, ``90s``, ``1d``, a number of seconds; ``0`` or ``off``: None."""
    if text.strip().lower() in ("0", "off", "never"):
        return None
    found = _DURATION.match(text.lower())
    if not found:
        raise errors.UsageError("--resync-every: not a duration (e.g. 6h, 30m, 90s, off)")
    seconds = float(found.group(1)) * _UNITS[found.group(2)]
    return seconds or None


class Printer:
    """The watcher's reports, as the commands they stand for print them."""

    def __init__(self, output: str, opts: GlobalOptions, echo=click.echo):
        self.output, self.opts, self.echo = output, opts, echo
        self._lock = threading.Lock()
        self._done = self._total = 0

    def _events(self, events) -> None:
        from ..documents.events import write
        with self._lock:
            write(events, self.echo)

    def drift(self, report) -> None:
        if self.output == "stream":
            from ..documents.events import drift_events
            self._events(drift_events(report))
        elif self.output == "markdown":
            from ..documents.markdown import render_drift_markdown
            self.echo(render_drift_markdown(report), nl=False)
        elif self.opts.verbosity >= 0 or any(i["status"] != "in-sync"
                                             for i in report["image_sets"]):
            from ..documents.render import render_drift
            self.echo(render_drift(report), nl=False)

    def planned(self, plan) -> None:
        from .output import write_plan
        write_plan(plan, "stream" if self.output == "stream" else self.output, self.opts)

    def apply_start(self, plan) -> None:
        from ..documents.plans import count_per_image_set
        self._done, self._total = 0, count_per_image_set(plan)
        if self.output == "stream":
            from ..documents.events import apply_start_events
            self._events(apply_start_events(plan))

    def apply_item(self, item) -> None:
        self._done += 1
        if self.output == "stream":
            from ..documents.events import apply_item_events
            self._events(apply_item_events(item, self._done, self._total))

    def apply_done(self, report) -> None:
        if self.output == "stream":
            from ..documents.events import apply_summary_events
            self._events(apply_summary_events(report))
        else:
            from ..documents.render import render_report
            self.echo(render_report(report), nl=False)


def build_watcher(opts: GlobalOptions, paths, self_heal: bool, lock_timeout: float,
                  printer, redact_here: bool | None = None):
    """The watcher as the command line and the Lambda handler both wire it."""
    from datetime import timedelta

    from ..engine.applier import ApplyOptions
    from ..engine.drift import DriftOptions
    from ..engine.watch import Watcher, WatchOptions
    from ..spec.config import load_config
    from ..spec.loader import load_specs

    config = load_config(opts.config_path)
    specs = load_specs(list(paths), config)
    hi = make_service(opts, config)     # one client, one quota pacer for every read and write

    def plan_for(chosen, state, redactor):
        # As apply plans: every image set read (a listing never says "nothing changed"). The
        # specs chosen are a part of the project (the image set an event names), never the
        # whole: what they lack is not removed, so a heal never forgets or reverts anything.
        return make_plan(hi, config, chosen, state, redactor, read_all=True, complete=False)

    options = WatchOptions(
        self_heal=self_heal, lock_timeout=lock_timeout, default_datastore=config.datastore_id,
        apply=ApplyOptions(primary=config.primary),
        drift=DriftOptions(use_checkpoint=True,
                           overlap=timedelta(seconds=config.drift.overlap_seconds),
                           full_after=timedelta(hours=config.drift.full_check_after_hours)))
    watcher = Watcher(hi, make_backend(config), specs, is_ignored=config.is_ignored,
                      make_redactor=lambda state: make_redactor(opts, config, redact_here, state),
                      make_plan=plan_for, output=printer, options=options)
    return watcher, config


@cli.command()
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--queue-url", required=True, envvar="RECONCILER_QUEUE_URL",
              help="The SQS queue an EventBridge rule delivers aws.medical-imaging events to "
                   "(also $RECONCILER_QUEUE_URL).")
@click.option("--self-heal", is_flag=True,
              help="Apply what drifted or is not applied, as apply does (off by default).")
@click.option("--once", is_flag=True,
              help="Exit once the queue has been empty for --wait seconds: 0 nothing left "
                   "drifted or not applied, 2 drift left, 1 an error.")
@click.option("--wait", type=click.FloatRange(min=0), default=5.0, show_default=True,
              metavar="SECONDS", help="With --once: how long the queue must stay empty.")
@click.option("--resync-every", default="6h", show_default=True, metavar="DURATION",
              help="A full incremental drift as a backstop for lost events (e.g. 30m, 6h; "
                   "off).")
@click.option("--lock-timeout", type=float, default=60.0, show_default=True, metavar="SECONDS",
              help="How long a self-heal waits for the state lock held by another run "
                   "(then the message is retried later).")
@click.option("--json-stream", "json_stream", is_flag=True,
              help="Print NDJSON events, one per line (fields: docs/gitops.md).")
@click.option("--format", "fmt", type=click.Choice(("text", "markdown")), default=None,
              help="Output format (default: text).")
@redact_option
@click.pass_obj
def watch(opts: GlobalOptions, paths, queue_url, self_heal, once, wait, resync_every,
          lock_timeout, json_stream, fmt, redact_here):
    """Reconcile continuously from HealthImaging's events on an SQS queue.

    A managed image set that was updated, copied into, reverted or deleted gets a drift check
    of that image set alone; a new image set a selector spec covers is planned. With
    --self-heal both are applied as apply does. SIGTERM or Ctrl-C finishes the image set in
    hand, saves and exits 0.

    \b
    Examples:
      reconciler watch --queue-url "$QUEUE" --json-stream
      reconciler watch --queue-url "$QUEUE" --self-heal --resync-every 1h
      reconciler watch --queue-url "$QUEUE" --once --wait 10   # drain, then exit 0/1/2
    """
    from ..engine.watch import LoopOptions, run
    from ..healthimaging.aws import ClientSettings
    from ..healthimaging.sqs import SqsQueue

    if json_stream and fmt:
        raise errors.UsageError("choose one output: --format or --json-stream")
    every = parse_duration(resync_every)
    printer = Printer("stream" if json_stream else fmt or "text", opts)
    watcher, config = build_watcher(opts, paths, self_heal, lock_timeout, printer, redact_here)
    queue = SqsQueue(queue_url, settings=ClientSettings(region=opts.region or config.region,
                                                       profile=opts.profile))
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set())
                for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        return run(watcher, queue, LoopOptions(once=once, wait=wait, resync_every=every), stop)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


# -- Lambda ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Record:
    message_id: str
    body: str
    receive_count: int


class _LambdaBatch:
    """Lambda deletes the messages of a batch it is not told failed: nothing to delete here."""

    def delete(self, message: Any) -> None:
        return None


_LAMBDA_WATCHER: Any = None


def lambda_handler(event: dict, context: Any = None) -> dict:
    """Entry point for a Lambda function with an SQS trigger (``ReportBatchItemFailures`` on):
    each record is handled as ``watch`` handles a message; the ones that failed are returned
    as ``batchItemFailures``, so Lambda leaves them in the queue for its redrive policy.
    Configured by environment: ``RECONCILER_CONFIG`` (default ``reconciler.yaml``),
    ``RECONCILER_SELF_HEAL`` (``true`` to apply), ``RECONCILER_LOCK_TIMEOUT`` (seconds).
    Output: NDJSON on stdout (CloudWatch Logs)."""
    from ..engine.watch import process

    global _LAMBDA_WATCHER
    if _LAMBDA_WATCHER is None:     # one per execution environment: its memory of versions
        opts = GlobalOptions(config_path=os.environ.get("RECONCILER_CONFIG", "reconciler.yaml"))
        _LAMBDA_WATCHER = build_watcher(
            opts, (), os.environ.get("RECONCILER_SELF_HEAL", "").lower() == "true",
            float(os.environ.get("RECONCILER_LOCK_TIMEOUT", "60")),
            Printer("stream", opts, echo=lambda text, nl=True: print(text, flush=True)))[0]
    failures = []
    for raw in event.get("Records", []):
        record = _Record(raw.get("messageId", ""), raw.get("body", ""),
                         int(raw.get("attributes", {}).get("ApproximateReceiveCount", "1")))
        if not process(_LAMBDA_WATCHER, _LambdaBatch(), record):
            failures.append({"itemIdentifier": record.message_id})
    return {"batchItemFailures": failures}
