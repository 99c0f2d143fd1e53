"""``reconciler state rekey``: rotate the key of the state's hashes, or move the state to the
key source reconciler.yaml names now (:func:`reconciler.engine.rekey.rekey`). Registered on
the ``state`` group of :mod:`.state`."""

from __future__ import annotations

import click

from ..core import errors
from .base import GlobalOptions, make_backend, make_keys
from .state import state


@state.command("rekey")
@click.option("--from", "from_source", metavar="SOURCE",
              help="The key source the state is sealed with now, when it is not the one "
                   "reconciler.yaml names: file, file:PATH, env, env:NAME or kms:KEY_ID.")
@click.option("--lock-timeout", type=float, default=0.0, show_default=True, metavar="SECONDS",
              help="How long to wait for the state lock held by another run.")
@click.pass_obj
def state_rekey(opts: GlobalOptions, from_source, lock_timeout):
    """Rotate the key of the state's hashes (under the state lock).

    Adds a new data key: every hash, UID token and spec digest gets one more keyed layer,
    so a guess can no longer be tested without the new key. The keys are then sealed with
    the key source of reconciler.yaml (keys:), which may differ from the one the state was
    sealed with (name that one with --from). Reads no metadata; saved plans stay applicable.

    \b
    Examples:
      reconciler state rekey
      reconciler state rekey --from file      # after setting keys: {source: kms, ...}
    """
    from ..engine.rekey import rekey
    from ..spec.config import load_config
    from ..states.keys import parse_source

    config = load_config(opts.config_path)
    source = make_keys(config)
    old = parse_source(from_source, config.keys, region=config.region) if from_source else None
    done = rekey(make_backend(config), source, old, lock_timeout)
    if opts.verbosity >= 0:
        click.echo(f"Re-keyed the state {done.location} (serial {done.serial}; "
                   f"{done.records} record{'s' if done.records != 1 else ''}, "
                   f"{done.refusals} refusal{'s' if done.refusals != 1 else ''}).\n"
                   f"  before: {done.before}\n  now:    {done.after}")
    return errors.EXIT_OK
