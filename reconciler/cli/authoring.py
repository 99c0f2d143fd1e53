"""The commands that author spec files: ``validate`` checks them offline, ``fmt`` rewrites
them in the canonical layout, and ``import`` writes a starting spec from live metadata (the
only one of the three that calls HealthImaging)."""

from __future__ import annotations

import click

from ..core import errors
from .base import GlobalOptions, cli, make_service


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
    from ..spec.config import load_config
    from ..spec.loader import load_specs

    config = load_config(opts.config_path)
    specs = load_specs(list(paths), config)
    if opts.verbosity >= 0:
        click.echo(f"{len(specs)} spec{'s' if len(specs) != 1 else ''} valid.")
    return errors.EXIT_OK


@cli.command("fmt")
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--check", is_flag=True,
              help="Change nothing; exit 1 if any file is not formatted (for CI).")
@click.pass_obj
def fmt_(opts: GlobalOptions, paths, check):
    """Rewrite spec files in the canonical layout, keeping comments, order and quoting.

    PATH as for validate (default: the specs of reconciler.yaml). Exit 1 with --check when a
    file would change, or when a file cannot be formatted safely.

    \b
    Examples:
      reconciler fmt               # rewrite in place
      reconciler fmt --check specs/
    """
    from ..spec.config import load_config
    from ..spec.fmt import format_paths

    result = format_paths(list(paths), load_config(opts.config_path), check=check)
    for problem in result.problems:
        click.echo(problem, err=True)
    for path in result.changed:
        if opts.verbosity >= 0 or check:
            click.echo(f"{'would reformat' if check else 'reformatted'} {path}")
    if opts.verbosity >= 0:
        n = len(result.changed) + len(result.unchanged)
        click.echo(f"{n} file{'s' if n != 1 else ''} checked, {len(result.changed)} "
                   f"{'to reformat' if check else 'reformatted'}.", err=True)
    return errors.EXIT_ERROR if result.problems or (check and result.changed) else errors.EXIT_OK


@cli.command("import")
@click.option("--datastore-id", help="Data store (default: datastoreId of reconciler.yaml).")
@click.option("--image-set-id", "image_set_ids", multiple=True, help="Image set; repeatable.")
@click.option("--selector", "selectors", multiple=True, metavar="KEY=VALUE",
              help="SearchImageSets EQUAL filter, e.g. DICOMStudyInstanceUID=1.2.3; repeatable.")
@click.option("--level", "levels", default="Patient,Study", show_default=True,
              help="Comma-separated levels to import: Patient, Study, Series, Instance.")
@click.option("--out-dir", type=click.Path(file_okay=False),
              help="Write one file per study here (study-<hash>.yaml) instead of stdout.")
@click.pass_obj
def import_(opts: GlobalOptions, datastore_id, image_set_ids, selectors, levels, out_dir):
    """Write a starting spec (YAML on stdout) from live metadata; plan then shows no change.

    \b
    Examples:
      reconciler import --selector DICOMStudyInstanceUID=1.2.3 > specs/study.yaml
      reconciler import --image-set-id ID1 --image-set-id ID2 --out-dir specs/
    """
    from ..engine.importer import import_specs
    from ..spec.config import load_config

    config = load_config(opts.config_path)
    datastore_id = datastore_id or config.datastore_id
    if not datastore_id:
        raise errors.UsageError("--datastore-id is required (reconciler.yaml sets none)")
    if bool(image_set_ids) == bool(selectors):
        raise errors.UsageError("give --image-set-id or --selector (one of the two)")
    hi = make_service(opts, config)
    ids = list(image_set_ids)
    if selectors:
        filters = []
        for item in selectors:
            key, sep, value = item.partition("=")
            if not sep:
                raise errors.UsageError(f"--selector expects KEY=VALUE, got {item!r}")
            typed = value.lower() == "true" if key == "isPrimary" else value
            filters.append({"operator": "EQUAL", "values": [{key: typed}]})
        ids = sorted({s.image_set_id for s in hi.search_image_sets(datastore_id, filters=filters)})
        if not ids:
            raise errors.ReconcilerError("the selector matched no image set")
    chosen = tuple(part.strip() for part in levels.split(",") if part.strip())
    if out_dir:
        from ..engine.importer import import_to_dir
        for path, count in import_to_dir(hi, config, datastore_id, ids, chosen, out_dir):
            click.echo(f"Wrote {path} ({count} image set{'s' if count != 1 else ''}).")
        return errors.EXIT_OK
    click.echo(import_specs(hi, config, datastore_id, ids, chosen), nl=False)
    return errors.EXIT_OK
