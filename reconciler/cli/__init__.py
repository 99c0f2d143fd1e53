"""The command line, ``reconciler`` and its subcommands (this package is the only place that
imports click).

Each command body is: parse options → one engine call → render → exit code. Errors become exit
codes in one place, :class:`reconciler.cli.base.ReconcilerGroup` (through
:func:`reconciler.core.errors.exit_code_for`); click's own usage errors exit 1, so that 2 always
means "there are changes" / "drift found".

* :mod:`.base`: the ``cli`` group, its global options, the error mapping, the shared wiring;
* :mod:`.output`: output formats and the printing helpers the commands share;
* :mod:`.authoring`: ``validate``, ``fmt``, ``import``;
* :mod:`.plan`: ``plan``, ``show``;
* :mod:`.apply`: ``apply``, ``rollback``;
* :mod:`.drift`: ``drift``;
* :mod:`.state`: ``state list | show | unlock``;
* :mod:`.watch`: ``watch`` (and its Lambda handler);
* :mod:`.keys`: ``state rekey``;
* :mod:`.emulator`: ``emulator serve``.

This module imports the command modules, which register their commands on ``cli``, and holds
the entry points: :func:`main` (returns the exit code) and :func:`run` (the console script and
``python -m reconciler``).
"""

from __future__ import annotations

import sys

# Each command module registers its commands on ``cli`` when imported.
from . import apply, authoring, drift, emulator, plan, state, watch  # noqa: F401
from . import keys  # noqa: F401  (after state: it registers on the state group)
from ..core.memory import limit_malloc_arenas
from .base import cli

__all__ = ["cli", "main", "run"]


def main(argv: list[str] | None = None) -> int:
    """Entry point: runs the group and returns the documented exit code."""
    limit_malloc_arenas()         # before any thread starts (reconciler.core.memory)
    return cli.main(args=argv, prog_name="reconciler", standalone_mode=False)


def run() -> None:
    sys.exit(main())
