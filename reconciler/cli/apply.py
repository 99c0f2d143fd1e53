"""The commands that write to HealthImaging under the state lock: ``reconciler apply`` (a saved
plan exactly, or plan-confirm-apply from specs) and ``reconciler rollback`` (revert a spec's
image sets to the version recorded before our last apply)."""

from __future__ import annotations

import click

from ..core import errors
from .base import (
    GlobalOptions, allowances, cli, limit_options, make_backend, make_keys, make_plan,
    make_redactor, make_service, retry_refused_option)
from .output import ApplyWatcher, chosen_format, confirm, print_report, redact_option, write_plan


def _is_plan_file(paths) -> bool:
    from pathlib import Path

    return (len(paths) == 1 and Path(paths[0]).is_file()
            and Path(paths[0]).suffix.lower() not in (".yaml", ".yml"))


@cli.command()
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--auto-approve", is_flag=True, help="Apply without asking (a saved plan never asks).")
@click.option("--fail-fast", is_flag=True, help="Stop writing after the first image set fails.")
@click.option("--parallelism", type=click.IntRange(1, 100), default=4, show_default=True,
              help="Metadata documents read and diffed at once (verification, re-reads).")
@click.option("--max-in-flight", type=click.IntRange(1, 1000), default=32, show_default=True,
              help="Image sets in progress at once, those waiting for their asynchronous "
                   "update included (updates are paced to the quota anyway).")
@click.option("--wait-timeout", type=click.FloatRange(min=0), default=600.0, show_default=True,
              metavar="SECONDS", help="How long one update may stay LOCKED before it fails.")
@click.option("--lock-timeout", type=float, default=0.0, show_default=True, metavar="SECONDS",
              help="How long to wait for the state lock held by another run.")
@click.option("--json", "as_json", is_flag=True, help="Print the apply report as JSON.")
@click.option("--json-stream", "json_stream", is_flag=True,
              help="Print NDJSON events, one per line (see the README).")
@retry_refused_option
@limit_options
@redact_option
@click.pass_obj
def apply(opts: GlobalOptions, paths, auto_approve, fail_fast, parallelism, max_in_flight,
          wait_timeout, lock_timeout, as_json, json_stream, retry_refused, allow_large,
          allow_protected, redact_here):
    """Apply a saved plan exactly, or plan and apply after confirmation.

    With PLANFILE (from `plan --out`) the reviewed payloads are sent as they are, each against
    the version it was computed from; an image set that moved on in a way that changes the
    reviewed change stops as stale. With spec PATHs (or none) it plans, shows the plan and asks.

    \b
    Examples:
      reconciler apply plan.json
      reconciler apply specs/ --auto-approve
      reconciler apply plan.json --json-stream   # NDJSON events for CI
    """
    from ..documents.plans import has_changes, load
    from ..engine.applier import ApplyOptions
    from ..engine.limits import enforce
    from ..engine.operations import apply_plan, locked_state, report_failed
    from ..spec.config import load_config
    from ..spec.loader import covers_project, load_specs

    config = load_config(opts.config_path)
    saved = _is_plan_file(paths)
    output = chosen_format(as_json, None, json_stream)
    if output == "stream" and not (saved or auto_approve):
        raise errors.UsageError("--json-stream cannot ask for confirmation: apply a saved plan "
                                "or pass --auto-approve")
    plan_doc = load(paths[0], make_keys(config)) if saved else None
    specs = load_specs([] if saved else list(paths), config)
    backend = make_backend(config)
    hi = make_service(opts, config)   # one client and one pacer for the plan and the writes
    with locked_state(backend, "apply", lock_timeout) as state:
        redactor = make_redactor(opts, config, redact_here, state)
        if not saved:
            # A plan that leads to writes never trusts a listing for "nothing changed".
            plan_doc = make_plan(hi, config, specs, state, redactor, parallelism=parallelism,
                                  read_all=True, retry_refused=retry_refused,
                                  complete=covers_project(list(paths), config),
                                  allow=allowances(allow_large, allow_protected))
            if output != "json":
                write_plan(plan_doc, output, opts)
            if plan_doc["summary"]["error"]:
                # Nothing is applied when any image set cannot be planned; in JSON mode the
                # plan document (payloads hidden when redacted) says which and why.
                if output == "json":
                    write_plan(plan_doc, "json", opts)
                raise errors.ReconcilerError(
                    f"{plan_doc['summary']['error']} image set(s) could not be planned; "
                    f"nothing was applied")
            enforce(plan_doc)     # beyond the limits of reconciler.yaml: nothing is written
            if has_changes(plan_doc) and not auto_approve:
                confirm("Do you want to perform these actions?")
        on_result = ApplyWatcher(plan_doc, output == "stream", hi)
        doc = apply_plan(plan_doc, specs, hi, backend, state,
                         ApplyOptions(fail_fast=fail_fast, parallelism=parallelism,
                                      in_flight=max_in_flight, wait_timeout=wait_timeout,
                                      primary=config.primary),
                         saved, on_result=on_result)
        on_result.close()
    # What the report does not need is let go before it is written: the state, the plan, the
    # specs (at 100,000 image sets ~200 MB).
    del state, plan_doc, specs, on_result
    if output == "stream":
        from ..documents.events import apply_summary_events, write
        write(apply_summary_events(doc), click.echo)
    else:
        print_report(doc, as_json, opts)
    return errors.EXIT_ERROR if report_failed(doc) else errors.EXIT_OK


@cli.command()
@click.argument("name")
@click.option("--to-version", help="Revert to this version instead of the one before our apply.")
@click.option("--image-set-id", help="Only this image set of the spec.")
@click.option("--auto-approve", is_flag=True, help="Do not ask for confirmation.")
@click.option("--wait-timeout", type=click.FloatRange(min=0), default=600.0, show_default=True,
              metavar="SECONDS", help="How long one update may stay LOCKED before it fails.")
@click.option("--lock-timeout", type=float, default=0.0, show_default=True, metavar="SECONDS")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.pass_obj
def rollback(opts: GlobalOptions, name, to_version, image_set_id, auto_approve, wait_timeout,
             lock_timeout, as_json):
    """Revert a spec's image sets to the version recorded before our last apply.

    Sends revertToVersionId (a new version with the old content), waits, verifies, records.

    \b
    Example:
      reconciler rollback ct-small --auto-approve
    """
    from ..engine.operations import locked_state, report_failed
    from ..engine.rollback import RollbackOptions
    from ..engine.rollback import rollback as do_rollback
    from ..spec.config import load_config

    config = load_config(opts.config_path)
    backend = make_backend(config)
    with locked_state(backend, "rollback", lock_timeout) as state:
        records = [r for _, r in state.records(name)
                   if image_set_id in (None, r.image_set_id)]
        if records and not auto_approve:
            for r in records:
                click.echo(f"  image set {r.image_set_id}: revert to version "
                           f"{to_version or r.version_before}")
            confirm(f"Roll back spec {name}?")
        doc = do_rollback(name, make_service(opts, config), backend, state,
                          RollbackOptions(to_version=to_version, image_set_id=image_set_id,
                                          wait_timeout=wait_timeout))
    print_report(doc, as_json, opts)
    return errors.EXIT_ERROR if report_failed(doc) else errors.EXIT_OK
