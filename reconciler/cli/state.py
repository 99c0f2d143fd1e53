"""``reconciler state list|show|unlock``: read the state, or break a stale lock. Each command
opens the configured backend (:func:`reconciler.cli.base.make_backend`) and prints what it
finds; none talks to HealthImaging."""

from __future__ import annotations

import click

from ..core import errors
from .base import GlobalOptions, cli, make_backend


@cli.group()
def state():
    """Inspect the state, or break a stale lock.

    \b
    Example:
      reconciler state list
    """


@state.command("list")
@click.pass_obj
def state_list(opts: GlobalOptions):
    """List the spec names and image sets in the state.

    \b
    Example:
      reconciler state list
    """
    from ..spec.config import load_config

    backend = make_backend(load_config(opts.config_path))
    current = backend.read()
    if current is None:
        click.echo(f"No state at {backend.describe()}.")
        return errors.EXIT_OK
    for name, record in current.records():
        version = (f"version {record.version_after}" if record.version_after is not None
                   else f"pending write on version {record.version_before}")
        click.echo(f"{name}\t{record.image_set_id}\t{version}\t"
                   f"{record.last_operation} {record.applied_at}")
    return errors.EXIT_OK


@state.command("show")
@click.argument("name")
@click.pass_obj
def state_show(opts: GlobalOptions, name):
    """Show what the state records for one spec (ids, versions, times; hashes, never values).

    \b
    Example:
      reconciler state show ct-small
    """
    import json

    from ..spec.config import load_config

    current = make_backend(load_config(opts.config_path)).read()
    records = current.records(name) if current else []
    if not records:
        raise errors.StateError(f"no spec named {name} in the state")
    click.echo(json.dumps({n: {r.image_set_id: r.to_dict() for _, r in records}
                           for n in {name}}, indent=2))
    return errors.EXIT_OK


@state.command("unlock")
@click.option("--force", is_flag=True, help="Remove the lock even if a live run holds it.")
@click.pass_obj
def state_unlock(opts: GlobalOptions, force):
    """Remove a lock left by a run that died.

    \b
    Example:
      reconciler state unlock
    """
    from ..spec.config import load_config

    backend = make_backend(load_config(opts.config_path))
    holder = backend.unlock(force=force)
    click.echo(f"Unlocked {backend.describe()}" + (f" (was held by {holder.describe()})"
                                                    if holder else " (it was not locked)"))
    return errors.EXIT_OK
