"""``reconciler plan`` (read live metadata, compute the minimal change, optionally save it with
``--out``) and ``reconciler show`` (render a saved plan exactly as ``plan`` printed it)."""

from __future__ import annotations

import click

from ..core import errors
from .base import (
    GlobalOptions, allowances, cli, limit_options, make_backend, make_keys, make_plan,
    make_redactor, make_service, retry_refused_option)
from .output import (
    FORMATS, chosen_format, format_options, plan_exit_code, redact_option, write_plan)


@cli.command()
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--out", type=click.Path(dir_okay=False),
              help="Save the exact plan here (sealed with the project's key, mode 0600) for "
                   "`apply PLANFILE`.")
@click.option("--json", "as_json", is_flag=True, help="Print the plan document as JSON only.")
@click.option("--detailed-exitcode", is_flag=True,
              help="Exit 0 when nothing changes, 2 when there are changes, 1 on error.")
@click.option("--target", "targets", multiple=True, metavar="NAME_GLOB",
              help="Plan only specs whose name matches; repeatable.")
@click.option("--exclude", "excludes", multiple=True, metavar="NAME_GLOB",
              help="Leave out specs whose name matches; repeatable.")
@click.option("--parallelism", type=click.IntRange(1, 100), default=10, show_default=True,
              help="Image sets read at once (reads are paced to the quotas anyway).")
@click.option("--read-all", is_flag=True,
              help="Read every image set, also those the state verified at the version the "
                   "search index lists as latest (the index may lag; without this flag a plain "
                   "plan says how many it skipped). plan --out and apply always read all.")
@retry_refused_option
@limit_options
@format_options
@redact_option
@click.pass_obj
def plan(opts: GlobalOptions, paths, out, as_json, detailed_exitcode, targets, excludes,
         parallelism, read_all, retry_refused, allow_large, allow_protected, fmt, json_stream,
         redact_here):
    """Read the live metadata and show the minimal change.

    Specs gone from the project (or image sets a spec no longer covers) are planned too: by
    default forgotten (their records leave the state, the metadata stays), or reverted when
    `removed` in reconciler.yaml says so; renamed specs (`moved`) keep their records. A plan
    beyond `limits` of reconciler.yaml is printed, not saved, and exits 1.

    \b
    Examples:
      reconciler plan specs/ --out plan.json --detailed-exitcode
      reconciler plan --out plan.json --format markdown > plan.md   # a PR comment
      reconciler plan --allow-large --allow-protected PatientID     # lift limits, this run
    """
    output = chosen_format(as_json, fmt, json_stream)
    from pathlib import Path

    from ..documents.plans import save
    from ..engine.limits import enforce
    from ..spec.config import load_config
    from ..spec.loader import covers_project, load_specs

    config = load_config(opts.config_path)
    specs = load_specs(list(paths), config)
    state = make_backend(config).read()
    if state is not None:
        state.open_keys()         # compares spec digests and refusals: needs the key
    doc = make_plan(make_service(opts, config), config, specs, state,
                     make_redactor(opts, config, redact_here, state),
                     targets, excludes, parallelism, read_all or bool(out), retry_refused,
                     complete=covers_project(list(paths), config),
                     allow=allowances(allow_large, allow_protected))
    beyond = bool((doc.get("limits") or {}).get("exceeded"))
    if out and not beyond:
        save(doc, out, make_keys(config))
    elif out and Path(out).is_file():
        # Not this plan: nor may an earlier one be left there to be applied by mistake.
        Path(out).unlink()
        click.echo(f"Removed {out}, an earlier plan: this one is not saved.", err=True)
    write_plan(doc, output, opts)
    enforce(doc)                  # beyond the limits: printed for review, never saved
    if out and output == "text" and opts.verbosity >= 0:
        click.echo(f"Saved the plan to {out}. Apply exactly it with: reconciler apply {out}")
    return plan_exit_code(doc, detailed_exitcode)


@cli.command()
@click.argument("planfile", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the plan document as JSON.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default=None,
              help="Output format (default: text).")
@redact_option
@click.pass_obj
def show(opts: GlobalOptions, planfile, as_json, fmt, redact_here):
    """Render a saved plan exactly as `plan` printed it.

    The plan is opened with the key of reconciler.yaml (keys:). A plan saved without
    redaction is redacted on display when redaction is on now.

    \b
    Examples:
      reconciler show plan.json
      reconciler show plan.json --format markdown
    """
    output = chosen_format(as_json, fmt)
    from ..documents.plans import load, redact_values
    from ..spec.config import load_config

    config = load_config(opts.config_path)
    doc = load(planfile, make_keys(config))
    redactor = make_redactor(opts, config, redact_here)
    if redactor.enabled and not doc["redacted"]:
        doc = redact_values(doc, redactor.show)
    write_plan(doc, output, opts)
    return errors.EXIT_ERROR if doc["summary"]["error"] else errors.EXIT_OK
