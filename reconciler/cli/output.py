"""The command line's output: formats, plan and report printing, apply's progress watcher,
the confirmation prompt, and the output options every command shares (part of the CLI: the
only place that uses click)."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Iterable

import click

from ..core import errors

if TYPE_CHECKING:
    from .base import GlobalOptions


def redact_option(f):
    """Output options are accepted after the subcommand too (docs/commands.md, global options)."""
    return click.option("--redact/--no-redact", "redact_here", default=None,
                        help="Hide PHI values (default: on when CI is set).")(f)


def _print_plan(doc, as_json: bool, opts: GlobalOptions) -> None:
    from ..documents.render import json_chunks, plan_lines

    if as_json:
        for chunk in json_chunks(doc):
            click.echo(chunk, nl=False)
    elif opts.verbosity >= 0 or doc["summary"]["error"]:
        echo_lines(plan_lines(doc, color=opts.color and sys.stdout.isatty()))


def echo_lines(lines: Iterable[str]) -> None:
    """``lines`` printed as they come, a thousand at a time (a plan or report of 100,000
    image sets is never one string)."""
    batch: list[str] = []
    for line in lines:
        batch.append(line)
        if len(batch) >= 1000:
            click.echo("\n".join(batch))
            batch = []
    if batch:
        click.echo("\n".join(batch))


def echo_document(doc: dict) -> None:
    """A report as indented JSON, written in pieces as it is encoded."""
    from ..documents.render import document_chunks

    for chunk in document_chunks(doc):
        click.echo(chunk, nl=False)


FORMATS = ("text", "markdown", "json")


def format_options(f):
    """--format text|markdown|json (``--json`` is ``--format json``) and --json-stream."""
    f = click.option("--json-stream", "json_stream", is_flag=True,
                     help="Print NDJSON events, one per line (fields: docs/gitops.md).")(f)
    return click.option("--format", "fmt", type=click.Choice(FORMATS), default=None,
                        help="Output format (default: text).")(f)


def chosen_format(as_json: bool, fmt: str | None, json_stream: bool = False) -> str:
    chosen = {"json"} if as_json else set()
    chosen |= {fmt} if fmt else set()
    chosen |= {"stream"} if json_stream else set()
    if len(chosen) > 1:
        raise errors.UsageError("choose one output: --json, --format or --json-stream")
    return chosen.pop() if chosen else "text"


def write_plan(doc, output: str, opts: GlobalOptions) -> None:
    """The plan in the chosen output (text and json as _print_plan prints them)."""
    if output == "markdown":
        from ..documents.markdown import render_plan_markdown
        click.echo(render_plan_markdown(doc), nl=False)
    elif output == "stream":
        from ..documents.events import plan_events, write
        write(plan_events(doc), click.echo)
    else:
        _print_plan(doc, output == "json", opts)


def plan_exit_code(doc, detailed: bool) -> int:
    from ..documents.plans import has_changes

    if doc["summary"]["error"]:
        return errors.EXIT_ERROR
    if detailed and has_changes(doc):
        return errors.EXIT_CHANGES
    return errors.EXIT_OK


def confirm(question: str) -> None:
    if not sys.stdin.isatty():
        raise errors.UsageError("refusing to apply without a terminal to confirm: pass "
                                "--auto-approve, or apply a reviewed plan file; nothing was written")
    click.echo(f"{question}\n  Only 'yes' will be accepted to approve.\n")
    if click.prompt("  Enter a value", default="", show_default=False).strip() != "yes":
        raise errors.ReconcilerError("apply cancelled; nothing was written")


class ApplyWatcher:
    """Called once per finished image set: NDJSON events as they happen (--json-stream), and
    progress on stderr when a person watches."""

    def __init__(self, plan_doc, stream: bool, hi):
        from ..documents.plans import count_per_image_set
        from ..documents.progress import Progress

        self.total = (count_per_image_set(plan_doc) + len(plan_doc.get("removed", []))
                      + sum(len(m["image_sets"]) for m in plan_doc.get("moved", [])))
        self.stream = stream
        self.done = 0
        self.progress = Progress("apply", self.total,
                                 throttles=getattr(hi.pacer, "throttle_count", None))
        if stream:
            from ..documents.events import apply_start_events, write
            write(apply_start_events(plan_doc), click.echo)

    def __call__(self, item) -> None:
        self.done += 1
        self.progress.step()
        if self.stream:
            from ..documents.events import apply_item_events, write
            write(apply_item_events(item, self.done, self.total), click.echo)

    def close(self) -> None:
        self.progress.close()


def print_report(doc, as_json: bool, opts: GlobalOptions) -> None:
    from ..documents.render import report_lines

    if as_json:
        echo_document(doc)
    else:
        echo_lines(report_lines(doc))
