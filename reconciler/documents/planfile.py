"""A saved plan at rest: the plan document sealed with the project's key.

A saved plan must hold the exact request payloads (apply sends them), which are patient data,
and it travels: a CI artifact between the plan and the apply job. So ``plan --out`` writes it
sealed (:func:`reconciler.states.keys.seal`): a data key of its own, wrapped by the key
source of ``reconciler.yaml`` (KMS ``GenerateDataKey``, or the key file / environment
variable), and the plan document under AES-256-GCM, the envelope's header (format, version,
the lineage of the state the plan was made against, its time) authenticated as associated
data and the lineage bound into the key's context. Since format 2 the document is
gzip-compressed before it is sealed (a plan of 100,000 image sets is ~100 MB of JSON);
format 1 files, sealed uncompressed, still open. Since format 3 the compressed text is JSON
lines (the document less its lists, then one line per item), so that ``apply`` keeps each
item packed (:class:`reconciler.core.packed.PackedList`) instead of the whole document
parsed; format 2 still opens. Without the key the file tells what it is, when it was made and
against which state, and nothing else.

``show`` and ``apply`` open it with the same key source. A plan sealed with another key is
refused naming both keys; a plan edited anywhere (header, wrapped key or ciphertext) does not
authenticate and is refused; a plan in clear (an older reconciler, ``plan --json`` output, a
hand-made file) is refused too, since anyone can write one. Inside, the document keeps its
schema and checksum (:mod:`.plans`).
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterator
from typing import Any

from ..core.canonical import canonical_bytes
from ..core.errors import PlanFileError
from ..core.packed import PackedList
from ..states.keys import KeySource, SealError, seal, unseal

FORMAT = "reconciler-sealed-plan"
FORMAT_VERSION = "3"          # 3: JSON lines, gzip-compressed (2: one JSON text, gzip'd)
READABLE_VERSIONS = ("1", "2", "3")
_CHUNK = 1 << 20


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
    plaintext = _compressed_lines(doc)
    header = {"format": FORMAT, "format_version": FORMAT_VERSION, "lineage": lineage,
              "created_at": doc.get("created_at"), "compression": "gzip"}
    return (json.dumps(seal(keys, plaintext, context(lineage), header), indent=2)
            + "\n").encode("ascii")


def _compressed_lines(doc: dict[str, Any]) -> bytes:
    """Format 3's plaintext: gzip'd JSON lines. The first is ``{"keys": [the document's keys
    in order], "document": {its members that are not lists}, "lists": {name: item count}}``;
    then each item of each list, in that order, as canonical JSON. A reader can take the items
    one at a time (:func:`open_plan` keeps them packed) instead of parsing one ~100 MB text."""
    lists = {k: v for k, v in doc.items() if isinstance(v, (list, PackedList))}
    head = {"keys": list(doc), "document": {k: v for k, v in doc.items() if k not in lists},
            "lists": {k: len(v) for k, v in lists.items()}}
    gz = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)     # a gzip stream
    out = [gz.compress(canonical_bytes(head) + b"\n")]
    for name in sorted(lists):                  # in the order of the first line's "lists"
        items = lists[name]
        texts = (items.canonical_texts() if isinstance(items, PackedList)
                 else map(canonical_bytes, items))
        out.extend(gz.compress(text + b"\n") for text in texts)
    out.append(gz.flush())
    return b"".join(out)


def _lines(compressed: bytes) -> Iterator[bytes]:
    """The lines of a gzip'd text, decompressed a chunk at a time."""
    gz = zlib.decompressobj(16 + zlib.MAX_WBITS)
    pending = b""
    for start in range(0, len(compressed), _CHUNK):
        pending += gz.decompress(compressed[start:start + _CHUNK])
        *lines, pending = pending.split(b"\n")
        yield from lines
    pending += gz.flush()
    if not gz.eof or gz.unused_data:
        raise zlib.error("not one whole gzip stream")
    yield from pending.split(b"\n")


def _read_lines(compressed: bytes) -> dict[str, Any]:
    """The document of format 3's plaintext, its lists packed (each item as its line)."""
    lines = _lines(compressed)
    head = json.loads(next(lines))
    if not (isinstance(head, dict) and isinstance(head.get("keys"), list)
            and isinstance(head.get("document"), dict) and isinstance(head.get("lists"), dict)
            and all(isinstance(n, int) and n >= 0 for n in head["lists"].values())
            and set(head["keys"]) == set(head["document"]) | set(head["lists"])):
        raise ValueError("not a plan's first line")
    lists = {}
    for name, count in head["lists"].items():
        lists[name] = PackedList(line for _, line in zip(range(count), lines))
        if len(lists[name]) != count:
            raise ValueError("fewer items than the plan's first line counts")
    if list(lines) != [b""]:                 # the text ends with the last item's newline
        raise ValueError("lines after the plan's last item")
    return {k: lists[k] if k in lists else head["document"][k] for k in head["keys"]}


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
        # The header is authenticated: its version is what sealed the plan.
        if version == "3":
            doc = _read_lines(plaintext)
        else:
            if version == "2":
                plaintext = zlib.decompress(plaintext, 16 + zlib.MAX_WBITS)
            doc = json.loads(plaintext)
    except (ValueError, StopIteration, zlib.error):
        raise PlanFileError(f"{source}: the sealed plan does not hold a plan document") from None
    inner = doc.get("state") if isinstance(doc, dict) else None
    if not isinstance(inner, dict) or inner.get("lineage") != lineage:
        raise PlanFileError(f"{source}: the sealed plan's lineage differs from the plan's")
    return doc
