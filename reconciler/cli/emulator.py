"""``reconciler emulator serve``: runs the local HealthImaging emulator
(:mod:`reconciler.emulator`, imported only when the command runs); it reads no project config."""

from __future__ import annotations

import click

from ..core import errors
from .base import cli


@cli.group()
def emulator():
    """The local HealthImaging emulator (see reconciler/emulator/README.md).

    \b
    Example:
      reconciler emulator serve --seed examples/dicom
    """


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
@click.option("--s3-endpoint", metavar="URL",
              help="S3 for import jobs (default: AWS_ENDPOINT_URL_S3 or AWS).")
@click.option("--events-endpoint", metavar="URL",
              help="EventBridge to publish HealthImaging's events to (PutEvents, best effort).")
@click.option("--region", default="us-east-1", show_default=True,
              help="Region of the event bus, the events and the S3 client.")
def emulator_serve(host, port, data_dir, seeds, quotas, time_scale, update_delay, faults_file,
                   validation, behaviours, s3_endpoint, events_endpoint, region):
    """Run the emulator until interrupted.

    The first line on stdout is `Emulator listening on http://HOST:PORT`, then the seeded ids.

    \b
    Example:
      reconciler emulator serve --seed examples/dicom --data-dir .emulator
      aws medical-imaging list-datastores --endpoint-url http://127.0.0.1:PORT
    """
    from ..emulator.server import ServeOptions, serve

    pairs = {}
    for item in behaviours:
        name, sep, value = item.partition("=")
        if not sep:
            raise errors.UsageError(f"--behaviour expects NAME=VALUE, got {item!r}")
        pairs[name.strip()] = value.strip()
    serve(ServeOptions(host=host, port=port, data_dir=data_dir, seeds=list(seeds), quotas=quotas,
                       time_scale=time_scale, update_delay=update_delay, faults_file=faults_file,
                       validation=validation, behaviours=pairs, s3_endpoint=s3_endpoint,
                       events_endpoint=events_endpoint, region=region))
