"""A saved plan at rest: the plan document sealed with the project's key.

A saved plan must hold the exact request payloads (apply sends them), which are patient data,
and it travels: a CI artifact between the plan and the apply job. So ``plan --out`` writes it
sealed (:func:`reconciler.states.keys.seal`): a data key of its own, wrapped by the key
source of ``reconciler.yaml`` (KMS ``GenerateDataKey``, or the key file / environment
variable), and the plan document under AES-256-GCM, the envelope's header (format, version,
the lineage of the state the plan was made against, its time) authenticated as associated
data and the lineage bound into the key's context. Since format 2 the document is
gzip-compressed before it is sealed (a plan of 100,000 image sets is ~100 MB of JSON);
format 1 files, sealed uncompressed, still open. Without the key the file tells what it is,
when it was made and against which state, and nothing else.

``show`` and ``apply`` open it with the same key source. A plan sealed with another key is
refused naming both keys; a plan edited anywhere (header, wrapped key or ciphertext) does not
authenticate and is refused; a plan in clear (an older reconciler, ``plan --json`` output, a
hand-made file) is refused too, since anyone can write one. Inside, the document keeps its
schema and checksum (:mod:`.plans`).
"""

from __future__ import annotations

import json
import zlib
from typing import Any

from ..core.canonical import batched, json_pieces
from ..core.errors import PlanFileError
from ..states.keys import KeySource, SealError, seal, unseal

FORMAT = "reconciler-sealed-plan"
FORMAT_VERSION = "2"          # 2: the document is gzip-compressed before it is sealed
READABLE_VERSIONS = ("1", "2")


def context(lineage: str | None) -> dict[str, str]:
    """What the data key is bound to (KMS's encryption context; the AAD for a local key)."""
    return {"reconciler:purpose": "saved-plan", "reconciler:lineage": lineage or "none"}


def seal_plan(doc: dict[str, Any], keys: KeySource) -> bytes:
    """The bytes of a sealed plan file for the plan document ``doc``.

    The document is encoded and gzip-compressed piece by piece, never whole in memory: at
    100,000 image sets its JSON is ~100 MB, and encoding, sealing and base64 each made another
    copy of it (the compressed form is ~1/8 of it)."""
    state = doc.get("state")
    lineage = state.get("lineage") if isinstance(state, dict) else None
    plaintext = _compressed_json(doc)
    header = {"format": FORMAT, "format_version": FORMAT_VERSION, "lineage": lineage,
              "created_at": doc.get("created_at"), "compression": "gzip"}
    return (json.dumps(seal(keys, plaintext, context(lineage), header), indent=2)
            + "\n").encode("ascii")


def _compressed_json(doc: Any) -> bytes:
    gz = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)     # a gzip stream
    out = [gz.compress(text.encode("utf-8"))
           for text in batched(json_pieces(doc, ensure_ascii=False))]
    out.append(gz.flush())
    return b"".join(out)


def open_plan(data: bytes, keys: KeySource, source: str) -> Any:
    """The plan document in a sealed plan file (not yet validated: see plans.validate)."""
    try:
        outer = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise PlanFileError(f"{source}: not a saved plan (not JSON): save plans with "
                            f"reconciler plan --out") from None
    if not isinstance(outer, dict) or outer.get("format") != FORMAT:
        if isinstance(outer, dict) and "image_sets" in outer:
            raise PlanFileError(f"{source}: this plan is not sealed (an older reconciler, plan "
                                f"--json output, or written by hand): saved plans are encrypted "
                                f"with the project's key, and anyone can write one in clear. "
                                f"Save the plan again with reconciler plan --out")
        raise PlanFileError(f"{source}: not a saved plan: save plans with reconciler plan --out")
    version = outer.get("format_version")
    if version not in READABLE_VERSIONS:
        raise PlanFileError(f"{source}: unsupported sealed plan format_version "
                            f"{version!r} (this reconciler reads "
                            f"{', '.join(map(repr, READABLE_VERSIONS))})")
    lineage = outer.get("lineage")
    if lineage is not None and not isinstance(lineage, str):
        raise PlanFileError(f"{source}: not a valid sealed plan at lineage")
    try:
        plaintext = unseal(keys, outer, context(lineage), f"the plan {source}")
    except SealError:
        raise PlanFileError(f"{source}: the plan was modified after it was written (it does "
                            f"not authenticate with its key); run plan again") from None
    try:
        if version != "1":              # the header is authenticated: this is what sealed it
            plaintext = zlib.decompress(plaintext, 16 + zlib.MAX_WBITS)
        doc = json.loads(plaintext)
    except (UnicodeDecodeError, json.JSONDecodeError, zlib.error):
        raise PlanFileError(f"{source}: the sealed plan does not hold a plan document") from None
    inner = doc.get("state") if isinstance(doc, dict) else None
    if not isinstance(inner, dict) or inner.get("lineage") != lineage:
        raise PlanFileError(f"{source}: the sealed plan's lineage differs from the plan's")
    return doc
