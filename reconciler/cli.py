"""The command line: the only module that imports click.

Each command body is: parse options → one engine call → render → exit code. Errors become exit
codes in :func:`main` only (through :func:`reconciler.errors.exit_code_for`); click's own usage
errors exit 1, so that 2 always means "there are changes" / "drift found".
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field

import click

from . import __version__, errors

log = logging.getLogger("reconciler")


@dataclass
class GlobalOptions:
    region: str | None = None
    profile: str | None = None
    endpoint_url: str | None = None
    config_path: str | None = None
    color: bool = True
    verbosity: int = 0          # -1 quiet, 0 normal, 1 verbose
    redact: bool | None = None  # None: decided by config / CI
    extra: dict = field(default_factory=dict)


def _setup_logging(verbosity: int) -> None:
    level = logging.DEBUG if verbosity > 0 else logging.WARNING if verbosity == 0 else logging.ERROR
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("reconciler")
    root.handlers[:] = [handler]
    root.setLevel(level)
    # botocore's own debug logs print request bodies (metadata values): never let them through.
    logging.getLogger("botocore").setLevel(logging.WARNING)
    logging.getLogger("urllib3").setLevel(logging.WARNING)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="reconciler")
@click.option("--region", envvar=None, help="AWS region (default: the standard AWS chain).")
@click.option("--profile", help="AWS shared-config profile.")
@click.option("--endpoint-url", help="HealthImaging endpoint, e.g. the local emulator "
              "(AWS_ENDPOINT_URL_MEDICAL_IMAGING and AWS_ENDPOINT_URL are honoured too).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              help="Project config (default: reconciler.yaml in the working directory, if any).")
@click.option("--no-color", is_flag=True, help="Plain output without ANSI colours.")
@click.option("-q", "--quiet", is_flag=True, help="Only errors on stderr.")
@click.option("-v", "--verbose", is_flag=True, help="Debug logs on stderr (never metadata values).")
@click.option("--redact/--no-redact", default=None,
              help="Hide PHI values in output (default: on when CI is set).")
@click.pass_context
def cli(ctx: click.Context, region, profile, endpoint_url, config_path, no_color, quiet, verbose,
        redact):
    """Declarative reconciler for AWS HealthImaging image-set metadata."""
    verbosity = 1 if verbose else -1 if quiet else 0
    _setup_logging(verbosity)
    ctx.obj = GlobalOptions(region=region, profile=profile, endpoint_url=endpoint_url,
                            config_path=config_path, color=not no_color, verbosity=verbosity,
                            redact=redact)


# --------------------------------------------------------------------------------------------
# validate
# --------------------------------------------------------------------------------------------
@cli.command()
@click.argument("paths", nargs=-1, type=click.Path())
@click.pass_obj
def validate(opts: GlobalOptions, paths):
    """Check spec files offline (schema and DICOM rules); no AWS call.

    PATH is a spec file or a directory searched for *.yaml / *.yml. Every problem is printed
    as FILE:LINE:COLUMN: PATH: message; exit 1 if there is any.

    \b
    Example:
      reconciler validate specs/
    """
    from .config import load_config
    from .specs import load_specs

    config = load_config(opts.config_path)
    specs = load_specs(list(paths), config)
    if opts.verbosity >= 0:
        click.echo(f"{len(specs)} spec{'s' if len(specs) != 1 else ''} valid.")
    return errors.EXIT_OK


# --------------------------------------------------------------------------------------------
# plan / show
# --------------------------------------------------------------------------------------------
def _redact_option(f):
    """Output options are accepted after the subcommand too (product.md §1)."""
    return click.option("--redact/--no-redact", "redact_here", default=None,
                        help="Hide PHI values (default: on when CI is set).")(f)


def _service(opts: GlobalOptions, config):
    from .aws import BotoHealthImaging, ClientSettings
    from .pacing import Pacer

    settings = ClientSettings(region=opts.region or config.region, profile=opts.profile,
                              endpoint_url=opts.endpoint_url)
    return BotoHealthImaging(settings=settings, pacer=Pacer(config.quotas))


def _redactor(opts: GlobalOptions, config, redact_here: bool | None):
    from .redact import Redactor, redaction_enabled

    flag = redact_here if redact_here is not None else opts.redact
    return Redactor(redaction_enabled(flag, config.redact))


def _print_plan(doc, as_json: bool, opts: GlobalOptions) -> None:
    from .render import render_json, render_plan

    if as_json:
        click.echo(render_json(doc), nl=False)
    elif opts.verbosity >= 0 or doc["summary"]["error"]:
        click.echo(render_plan(doc, color=opts.color and sys.stdout.isatty()), nl=False)


def _plan_exit_code(doc, detailed: bool) -> int:
    if doc["summary"]["error"]:
        return errors.EXIT_ERROR
    if detailed and doc["summary"]["update"]:
        return errors.EXIT_CHANGES
    return errors.EXIT_OK


@cli.command()
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--out", type=click.Path(dir_okay=False),
              help="Save the exact plan here (JSON, mode 0600) for `apply PLANFILE`.")
@click.option("--json", "as_json", is_flag=True, help="Print the plan document as JSON only.")
@click.option("--detailed-exitcode", is_flag=True,
              help="Exit 0 when nothing changes, 2 when there are changes, 1 on error.")
@click.option("--target", "targets", multiple=True, metavar="NAME_GLOB",
              help="Plan only specs whose name matches; repeatable.")
@click.option("--exclude", "excludes", multiple=True, metavar="NAME_GLOB",
              help="Leave out specs whose name matches; repeatable.")
@click.option("--parallelism", type=click.IntRange(1, 100), default=10, show_default=True,
              help="Image sets read at once (reads are paced to the quotas anyway).")
@_redact_option
@click.pass_obj
def plan(opts: GlobalOptions, paths, out, as_json, detailed_exitcode, targets, excludes,
         parallelism, redact_here):
    """Read the live metadata and show the minimal change.

    \b
    Example:
      reconciler plan specs/ --out plan.json --detailed-exitcode
    """
    from .config import load_config
    from .planner import PlanOptions, make_plan
    from .plans import save
    from .specs import check_overlaps, load_specs

    config = load_config(opts.config_path)
    specs = load_specs(list(paths), config)
    doc = make_plan(specs, _service(opts, config), _redactor(opts, config, redact_here),
                    default_datastore=config.datastore_id, check_overlaps=check_overlaps,
                    options=PlanOptions(targets=list(targets), excludes=list(excludes),
                                        parallelism=parallelism))
    if out:
        save(doc, out)
    _print_plan(doc, as_json, opts)
    if out and not as_json and opts.verbosity >= 0:
        click.echo(f"Saved the plan to {out}. Apply exactly it with: reconciler apply {out}")
    return _plan_exit_code(doc, detailed_exitcode)


@cli.command()
@click.argument("planfile", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the plan document as JSON.")
@_redact_option
@click.pass_obj
def show(opts: GlobalOptions, planfile, as_json, redact_here):
    """Render a saved plan exactly as `plan` printed it.

    A plan saved without redaction is redacted on display when redaction is on now.

    \b
    Example:
      reconciler show plan.json
    """
    from .config import load_config
    from .plans import load, redact_values

    doc = load(planfile)
    redactor = _redactor(opts, load_config(opts.config_path), redact_here)
    if redactor.enabled and not doc["redacted"]:
        doc = redact_values(doc, redactor.show)
    _print_plan(doc, as_json, opts)
    return errors.EXIT_ERROR if doc["summary"]["error"] else errors.EXIT_OK


# --------------------------------------------------------------------------------------------
# emulator
# --------------------------------------------------------------------------------------------
@cli.group()
def emulator():
    """The local HealthImaging emulator (see reconciler/emulator/README.md)."""


@emulator.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind; loopback unless you mean otherwise.")
@click.option("--port", default=0, type=int, show_default=True, help="0 picks a free port.")
@click.option("--data-dir", type=click.Path(file_okay=False),
              help="Persist every version here; a restart keeps them (default: in memory).")
@click.option("--seed", "seeds", multiple=True, type=click.Path(exists=True),
              help="DICOM file, directory of DICOM files, or metadata JSON; repeatable.")
@click.option("--quotas", type=click.Choice(["off", "aws"]), default="off", show_default=True,
              help="aws: enforce the published per-operation throttling limits.")
@click.option("--time-scale", type=float, default=1.0, show_default=True,
              help="Speed time up F-fold (quotas, update delay).")
@click.option("--update-delay", type=float, default=0.5, show_default=True,
              help="Seconds an update stays LOCKED/UPDATING.")
@click.option("--faults", "faults_file", type=click.Path(exists=True, dir_okay=False),
              help="Fault-injection rules (JSON or YAML).")
@click.option("--validation", type=click.Choice(["async", "sync"]), default="async",
              show_default=True,
              help="async: constraint violations end as UPDATE_FAILED; sync: 400 at once.")
@click.option("--behaviour", "behaviours", multiple=True, metavar="NAME=VALUE",
              help="Set one of the emulator's named choices for undocumented behaviour.")
def emulator_serve(host, port, data_dir, seeds, quotas, time_scale, update_delay, faults_file,
                   validation, behaviours):
    """Run the emulator until interrupted.

    The first line on stdout is `Emulator listening on http://HOST:PORT`, then the seeded ids.

    \b
    Example:
      reconciler emulator serve --seed examples/dicom --data-dir .emulator
      aws medical-imaging list-datastores --endpoint-url http://127.0.0.1:PORT
    """
    from .emulator.server import ServeOptions, serve

    pairs = {}
    for item in behaviours:
        name, sep, value = item.partition("=")
        if not sep:
            raise errors.UsageError(f"--behaviour expects NAME=VALUE, got {item!r}")
        pairs[name.strip()] = value.strip()
    serve(ServeOptions(host=host, port=port, data_dir=data_dir, seeds=list(seeds), quotas=quotas,
                       time_scale=time_scale, update_delay=update_delay, faults_file=faults_file,
                       validation=validation, behaviours=pairs))


# --------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    """Entry point: runs the group and turns every error into the documented exit code."""
    try:
        # Commands return their exit code (0, or 2 for "changes" / "drift"); non-standalone
        # mode hands it back here instead of exiting.
        result = cli.main(args=argv, prog_name="reconciler", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.Abort:
        click.echo("Aborted.", err=True)
        return errors.EXIT_ERROR
    except click.ClickException as exc:  # usage errors: 1, not click's 2
        exc.show()
        return errors.EXIT_ERROR
    except errors.SpecError as exc:
        for diagnostic in exc.diagnostics:
            click.echo(str(diagnostic), err=True)
        click.echo(f"Error: {exc}", err=True)
        return exc.exit_code
    except errors.ReconcilerError as exc:
        click.echo(f"Error: {exc}", err=True)
        return errors.exit_code_for(exc)
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        return 130
    return result if isinstance(result, int) else errors.EXIT_OK


def run() -> None:
    sys.exit(main())
