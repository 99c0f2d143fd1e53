"""The real command line for CliRunner, shared by the test packages (``tests/`` is on
``sys.path`` through its conftest)."""

from __future__ import annotations

import sys

import click


def cli_entry() -> click.Command:
    """A click command around ``reconciler.cli.main`` so that CliRunner sees the real exit
    codes (``main`` maps errors to codes; click's standalone mode would not)."""
    from reconciler.cli import main

    @click.command(context_settings={"ignore_unknown_options": True,
                                     "allow_interspersed_args": False,
                                     "help_option_names": []})
    @click.argument("args", nargs=-1, type=click.UNPROCESSED)
    def entry(args):
        sys.exit(main(list(args)))

    return entry
