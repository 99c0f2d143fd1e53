"""``reconciler state list|show|mv|rm|unlock``: read the state, file records under another
spec name, forget records, or break a stale lock. Each command opens the configured backend
(:func:`reconciler.cli.base.make_backend`); none talks to HealthImaging. ``mv`` and ``rm`` run
under the state lock, keep a backup of the snapshot they change and write it once."""

from __future__ import annotations

import click

from ..core import errors
from .base import GlobalOptions, cli, make_backend


@cli.group()
def state():
    """Inspect the state, rename or forget records, or break a stale lock.

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
    from ..states.document import no_gc

    backend = make_backend(load_config(opts.config_path))
    with no_gc():             # a short-lived command over objects without cycles
        current = backend.read()
        if current is None:
            click.echo(f"No state at {backend.describe()}.")
            return errors.EXIT_OK
        records = current.records()
    lines = []
    for name, record in records:
        version = (f"version {record.version_after}" if record.version_after is not None
                   else f"pending write on version {record.version_before}")
        peer = f"\tpeer of {record.peer_of}" if record.peer_of else ""
        lines.append(f"{name}\t{record.image_set_id}\t{version}\t"
                     f"{record.last_operation} {record.applied_at}{peer}\n")
    click.echo("".join(lines), nl=False)     # one write: per-line echo was a third of 100,000
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


def _edit(opts: GlobalOptions, operation: str, edit, backup, dry_run, lock_timeout) -> None:
    """Run ``edit(state)`` (an :mod:`reconciler.states.edits` call) under the state lock; keep a
    backup of the snapshot it changes, write the state once (its serial grows by one), and say
    what was done. ``dry_run``: say what would be done, change nothing."""
    from pathlib import Path

    from ..engine.operations import locked_state
    from ..spec.config import load_config
    from ..states.edits import write_backup

    backend = make_backend(load_config(opts.config_path))
    if backend.read() is None:
        raise errors.StateError(f"No state at {backend.describe()}; nothing was changed")
    with locked_state(backend, operation, lock_timeout) as current:
        before = current.serial
        copy = current.copy()
        done = edit(copy)                    # on a copy first: refused edits change nothing
        ids = ", ".join(done.image_set_ids)
        what = (f"{len(done.image_set_ids)} record{'s' if len(done.image_set_ids) != 1 else ''} "
                f"of spec {done.spec} ({ids})")
        if dry_run:
            click.echo(f"Would {'move' if done.target else 'remove'} {what}"
                       + (f" to spec {done.target}" if done.target else "")
                       + "; nothing was changed (--dry-run).")
            return
        kept = write_backup(current, Path(backup) if backup else backend.edit_backup_path(current))
        edit(current)
        backend.write(current)
    verb = f"Moved {what} to spec {done.target}" if done.target else f"Removed {what}"
    click.echo(f"{verb}: state serial {before} -> {current.serial}; the snapshot before is "
               f"kept in {kept}.")
    if not done.target:
        click.echo("The image sets' metadata was not touched; they are no longer managed.")


def _edit_options(f):
    f = click.option("--lock-timeout", type=float, default=0.0, show_default=True,
                     metavar="SECONDS",
                     help="How long to wait for the state lock held by another run.")(f)
    f = click.option("--dry-run", is_flag=True, help="Say what would change; change nothing.")(f)
    f = click.option("--backup", type=click.Path(dir_okay=False),
                     help="Where to keep the snapshot before the change (default: beside a "
                          "local state, state.json.<serial>.backup; else the working "
                          "directory).")(f)
    return click.option("--image-set-id", help="Only this image set's record.")(f)


@state.command("mv")
@click.argument("old")
@click.argument("new")
@_edit_options
@click.pass_obj
def state_mv(opts: GlobalOptions, old, new, image_set_id, backup, dry_run, lock_timeout):
    """File the records of spec OLD under NEW (a spec renamed), keeping what they say.

    Versions, hashes and what rollback goes back to follow the new name, so plan shows no
    change and drift checks it as before. In a repository reviewed by pull requests, prefer a
    `moved` entry in reconciler.yaml: plan shows it, apply does it. Refused when NEW already
    has a record of the same image set.

    \b
    Examples:
      reconciler state mv ct-small ct-chest
      reconciler state mv ct-small ct-chest --image-set-id 0778acef160a49f86276c4133dd52ff5
    """
    from ..states.edits import move

    _check_name(new)
    _edit(opts, "state mv", lambda s: move(s, old, new, image_set_id), backup, dry_run,
          lock_timeout)
    return errors.EXIT_OK


@state.command("rm")
@click.argument("name")
@_edit_options
@click.pass_obj
def state_rm(opts: GlobalOptions, name, image_set_id, backup, dry_run, lock_timeout):
    """Forget the records of spec NAME (or of one image set): they are no longer managed.

    The metadata is not touched (plan's removed entries do the same under review; `removed`
    in reconciler.yaml can revert instead). drift stops checking them; rollback can no
    longer revert them.

    \b
    Examples:
      reconciler state rm ct-small
      reconciler state rm ct-small --image-set-id 0778acef160a49f86276c4133dd52ff5 --dry-run
    """
    from ..states.edits import remove

    _edit(opts, "state rm", lambda s: remove(s, name, image_set_id), backup, dry_run,
          lock_timeout)
    return errors.EXIT_OK


def _check_name(name: str) -> None:
    import re

    if not re.fullmatch(r"[a-z0-9]([a-z0-9._-]{0,126}[a-z0-9])?", name):
        raise errors.UsageError(f"{name!r} is not a spec name: 1-128 lower-case letters, "
                                f"digits, '.', '_' or '-', starting and ending with a letter "
                                f"or digit")


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
