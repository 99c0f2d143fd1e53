"""The command line's frame: the click group ``cli`` with its global options
(:class:`GlobalOptions`), :class:`ReconcilerGroup` (the one place where errors become exit
codes), logging setup, and the wiring every command shares: the HealthImaging client
(:func:`make_service`), the redactor, the state backend, a plan (:func:`make_plan`) and the
``--retry-refused`` option. Commands register on ``cli`` in the modules that import this one.
Engine modules are imported inside the functions, so that starting the CLI stays cheap.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field

import click

from .. import __version__
from ..core import errors

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


class ReconcilerGroup(click.Group):
    """The top-level group: the one place where errors become exit codes, so that the console
    script, ``python -m reconciler`` and ``CliRunner`` in tests all behave alike."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        code = self._mapped(lambda: super(ReconcilerGroup, self).main(
            args, prog_name, complete_var, standalone_mode=False, **extra))
        if standalone_mode:
            sys.exit(code)
        return code

    @staticmethod
    def _mapped(call) -> int:
        try:
            # Commands return their exit code (0, or 2 for "changes" / "drift").
            result = call()
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


@click.group(cls=ReconcilerGroup,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
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
    """Declarative reconciler for AWS HealthImaging image-set metadata.

    \b
    Example:
      reconciler validate && reconciler plan --out plan.json && reconciler apply plan.json
    \b
    Shell completion (bash; zsh and fish alike with zsh_source / fish_source):
      eval "$(_RECONCILER_COMPLETE=bash_source reconciler)"
    """
    verbosity = 1 if verbose else -1 if quiet else 0
    _setup_logging(verbosity)
    ctx.obj = GlobalOptions(region=region, profile=profile, endpoint_url=endpoint_url,
                            config_path=config_path, color=not no_color, verbosity=verbosity,
                            redact=redact)



# --------------------------------------------------------------------------------------------
# Wiring shared by the commands
# --------------------------------------------------------------------------------------------
def make_service(opts: GlobalOptions, config):
    from ..healthimaging.aws import BotoHealthImaging, ClientSettings
    from ..healthimaging.pacing import Pacer

    settings = ClientSettings(region=opts.region or config.region, profile=opts.profile,
                              endpoint_url=opts.endpoint_url)
    headroom = {} if config.quota_headroom is None else {"headroom": config.quota_headroom}
    return BotoHealthImaging(settings=settings, pacer=Pacer(config.quotas, **headroom))


def make_redactor(opts: GlobalOptions, config, redact_here: bool | None, state=None):
    """Redaction as the flags, config and CI say; short hashes keyed with the state's
    redaction key when there is a state (so plan and drift show equal values alike), else a
    random key."""
    from ..dicom.redact import Redactor, redaction_enabled

    flag = redact_here if redact_here is not None else opts.redact
    enabled = redaction_enabled(flag, config.redact)
    return Redactor(enabled, key=state.redaction_key() if state is not None and enabled else None)


def make_keys(config):
    """The key source reconciler.yaml names (``keys:``; default: the user's key file)."""
    from ..states.keys import key_source

    return key_source(config.keys, region=config.region)


def make_backend(config):
    from ..states import open_backend

    return open_backend(config.state, config.root, keys=make_keys(config))


def make_plan(hi, config, specs, state, redactor, targets=(), excludes=(),
              parallelism: int = 10, read_all: bool = False, retry_refused: bool = False,
              complete: bool = True, allow=None):
    """The plan document. ``complete``: the specs are the whole project (no PATH, or PATHs
    that hold every spec file), so a spec the state knows and they lack was removed;
    ``allow``: what the run lifts of ``limits``
    (an :class:`~reconciler.engine.limits.Allowances`)."""
    from ..engine import limits, planner, removals
    from ..engine.operations import known_versions, refusals, state_serials
    from ..spec.loader import check_overlaps
    from ..states import State

    # The plan is made against the state with reconciler.yaml's renames done (a view).
    view, moved = (removals.prepare(state, config.lifecycle, {s.name: s for s in specs})
                   if state is not None else (None, []))
    return planner.make_plan(
        specs, hi, redactor,
        default_datastore=config.datastore_id, check_overlaps=check_overlaps,
        options=planner.PlanOptions(targets=list(targets), excludes=list(excludes),
                                    parallelism=parallelism,
                                    primary=config.primary,
                                    trust_state=not read_all),
        lineage=view.lineage if view is not None else None,
        serial=view.serial if view is not None else None,
        state_serial=state_serials(view) if view is not None else None,
        known_version=known_versions(view) if view is not None else None,
        refused=refusals(view) if view is not None and not retry_refused else None,
        retire=planner.Retirement(state=view if view is not None else State.new(),
                                  lifecycle=config.lifecycle, complete=complete, moved=moved,
                                  allow=allow or limits.Allowances()))


def allowances(allow_large: bool, allow_protected) -> object:
    from ..engine.limits import Allowances

    return Allowances(large=allow_large, protected=frozenset(allow_protected or ()))


def limit_options(f):
    """--allow-large and --allow-protected (plan, and apply when it plans)."""
    f = click.option("--allow-protected", "allow_protected", multiple=True, metavar="KEYWORD",
                     envvar="RECONCILER_ALLOW_PROTECTED",
                     help="Let this run change KEYWORD although limits.protectedAttributes of "
                          "reconciler.yaml protects it; repeatable (env "
                          "RECONCILER_ALLOW_PROTECTED, space-separated).")(f)
    return click.option("--allow-large", is_flag=True, envvar="RECONCILER_ALLOW_LARGE",
                        help="Let this run go beyond limits.maxImageSetsChanged / "
                             "maxStudiesChanged of reconciler.yaml (env "
                             "RECONCILER_ALLOW_LARGE=true).")(f)


retry_refused_option = click.option(
    "--retry-refused", is_flag=True,
    help="Plan again a request HealthImaging refused before (UPDATE_FAILED or a 400), which "
         "the state remembers; without it such an image set is an error saying it cannot "
         "converge.")
