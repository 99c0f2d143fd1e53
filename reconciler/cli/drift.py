"""``reconciler drift``: compares live metadata with the state and the specs
(:func:`reconciler.engine.operations.run_drift`) and renders the report as text, Markdown, JSON
or NDJSON events; exit 2 when anything drifted."""

from __future__ import annotations

import click

from ..core import errors
from .base import GlobalOptions, cli, make_backend, make_redactor, make_service
from .output import chosen_format, echo_document, echo_lines, format_options, redact_option


@cli.command()
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print the drift report as JSON.")
@click.option("--parallelism", type=click.IntRange(1, 100), default=10, show_default=True)
@click.option("--full", is_flag=True,
              help="Ignore the checkpoint: list every image set (finds deleted ones too).")
@click.option("--read-all", is_flag=True,
              help="Confirm every recorded image set with GetImageSet (one call each) instead "
                   "of trusting the search listing, which may lag behind a recent change. "
                   "Implies --full.")
@click.option("--lock-timeout", type=float, default=0.0, show_default=True, metavar="SECONDS",
              help="How long to wait for the state lock held by another run.")
@format_options
@redact_option
@click.pass_obj
def drift(opts: GlobalOptions, paths, as_json, parallelism, full, read_all, lock_timeout, fmt,
          json_stream, redact_here):
    """Compare live metadata with the state and the specs; exit 2 when anything drifted.

    A record whose spec is gone (or that no longer targets its image set by id) is reported
    orphaned, and exits 2 too, until an apply forgets or reverts it.

    After a check, the state remembers up to when every image set was in sync, and the next
    check lists only the image sets updated since (about one call for an untouched fleet). A
    deleted image set is found only by a full check: with --full, or once the last full check
    is older than drift.fullCheckAfterHours of reconciler.yaml (default 24). An image set the
    listing shows at the version our apply made counts as in sync without a read; the search
    index may lag, so the report says how many were judged that way, and --read-all reads
    every one.

    \b
    Examples:
      reconciler drift --json > drift.json
      reconciler drift --format markdown >> "$GITHUB_STEP_SUMMARY"
      reconciler drift --full
    """
    output = chosen_format(as_json, fmt, json_stream)
    from datetime import timedelta

    from ..documents.render import drift_lines
    from ..engine.drift import DriftOptions, describe_check, has_drift
    from ..engine.operations import run_drift
    from ..spec.config import load_config
    from ..spec.loader import covers_project, load_specs

    config = load_config(opts.config_path)
    specs = load_specs(list(paths), config)
    options = DriftOptions(use_checkpoint=not (full or read_all), read_all=read_all,
                           overlap=timedelta(seconds=config.drift.overlap_seconds),
                           full_after=timedelta(hours=config.drift.full_check_after_hours),
                           parallelism=parallelism,
                           complete=covers_project(list(paths), config))
    report = run_drift(make_service(opts, config), make_backend(config), specs, config.is_ignored,
                       lambda state: make_redactor(opts, config, redact_here, state), options,
                       lock_timeout,
                       renames={old: m.target for old, m in config.lifecycle.renames().items()})
    note = describe_check(report)
    if output == "json":
        echo_document(report)
    elif output == "markdown":
        from ..documents.markdown import render_drift_markdown
        click.echo(render_drift_markdown(report), nl=False)
    elif output == "stream":
        from ..documents.events import drift_events, write
        write(drift_events(report), click.echo)
    else:
        echo_lines(drift_lines(report))
        if note and opts.verbosity >= 0:
            click.echo(note)
    return errors.EXIT_CHANGES if has_drift(report) else errors.EXIT_OK
