"""CPU of planning one big image set vs the CPU of gunzip + parse of its metadata.

``python benchmarks/_large_plan.py ENDPOINT CONFIG SPEC_FILE IMAGE_SET_ID [BASELINE_ID BASELINE_SPEC_JSON]``
prints one JSON line. Plan CPU is ``time.process_time()`` around the engine's ``make_plan``
(the real planner over boto3 and HTTP, one image set, after one warm-up run), the minimum of a
few runs; parse CPU is the minimum over a few runs of ``gzip.decompress`` + ``json.loads`` of the
very bytes GetImageSetMetadata returns. The emulator runs in another process, so none of its
work is counted. The baseline's cost is the same read plus a whole-document deepdiff.
"""

import gzip
import json
import sys
import time


def cpu(fn, repeats):
    best = None
    for _ in range(repeats):
        t = time.process_time()
        fn()
        spent = time.process_time() - t
        best = spent if best is None else min(best, spent)
    return best


def main() -> int:
    endpoint, config_path, spec_file, isid, *rest = sys.argv[1:]
    from reconciler.dicom.redact import Redactor
    from reconciler.engine.planner import PlanOptions, make_plan
    from reconciler.spec.config import PrimaryPolicy
    from reconciler.healthimaging.aws import BotoHealthImaging, ClientSettings
    from reconciler.healthimaging.pacing import Pacer
    from reconciler.spec.config import load_config
    from reconciler.spec.loader import load_specs

    config = load_config(config_path)
    specs = load_specs([spec_file], config)
    hi = BotoHealthImaging(settings=ClientSettings(endpoint_url=endpoint, region="us-east-1"),
                           pacer=Pacer(config.quotas))

    # The CPU of diffing 5,000 instances is the figure, so the Series and instance changes of
    # the spec are planned as the pre-2025 reading would (nothing refused on a primary image
    # set; primary_restricted_levels=off): the default reading would refuse them unplanned.
    unrestricted = PlanOptions(progress=False, primary=PrimaryPolicy(restricted_levels=frozenset()))

    def plan():
        doc = make_plan(specs, hi, Redactor(False), default_datastore=config.datastore_id,
                        options=unrestricted)
        # (its Patient/Study changes make a study update, the rest rides along or follows)
        errors = [e.get("error") for e in doc["image_sets"] if e["action"] == "error"]
        assert not errors and (doc["groups"] or doc["image_sets"]), errors

    plan()  # warm-up: imports, dictionaries, connection pool
    r = hi.client.get_image_set_metadata(datastoreId=config.datastore_id, imageSetId=isid)
    raw = r["imageSetMetadataBlob"].read()
    parse = cpu(lambda: json.loads(gzip.decompress(raw)), 3)
    plan_cpu = cpu(plan, 2)
    out = {"parse_cpu": parse, "plan_cpu": plan_cpu, "gzip_bytes": len(raw),
           "json_bytes": len(gzip.decompress(raw))}
    if rest:
        sys.path.insert(0, __file__.rsplit("/", 1)[0])
        import baseline

        base_id, base_attrs = rest[0], json.loads(rest[1])
        b = baseline.Baseline(endpoint, config.datastore_id)
        braw = b.c.get_image_set_metadata(datastoreId=config.datastore_id,
                                          imageSetId=base_id)["imageSetMetadataBlob"].read()
        bparse = cpu(lambda: json.loads(gzip.decompress(braw)), 3)

        def naive():
            _, doc = b.read(base_id)
            assert baseline.attribute_updates(doc, baseline.wanted(doc, base_attrs))

        out.update(baseline_parse_cpu=bparse, baseline_plan_cpu=cpu(naive, 1),
                   baseline_json_bytes=len(gzip.decompress(braw)))
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
