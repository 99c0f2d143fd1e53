"""PHI redaction of values in output (docs/patient-data.md).

Which attributes are sensitive is not ours to decide: it is the list of the DICOM PS3.15 Basic
Application Level Confidentiality Profile (Table E.1-1), taken from the ``dicom-anonymizer``
package's tables of the 2026c edition, plus every private attribute (the profile removes
them all). A redacted value prints as ``<redacted PN len=8 sha256:1a2b3c>``: a short keyed hash,
so a reviewer still sees that a value changed and whether two values are equal, without the
value. The short hash is an HMAC under a key that is never printed or stored: with a state,
one derived from the state's keys (so plan and drift show equal values alike, and no one
without the key can test a guess against a hash in a CI log or a PR comment); without one, a
random key per run. Logs never contain values at all; this module is for plan / drift / show
output.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from functools import cache
from typing import Any

from ..core.canonical import canonical_bytes

# The edition of PS3.15 whose Table E.1-1 we use (a module of dicom-anonymizer).
PROFILE_EDITION = "dicomfields_2026c"


@cache
def profile_keywords() -> frozenset[str]:
    """Keywords of every attribute the Basic Profile lists (any action: D, Z, X, U, …)."""
    from dicomanonymizer.dicomfields_selector import dicom_anonymization_database_selector
    from pydicom.datadict import DicomDictionary, RepeatersDictionary, keyword_for_tag

    keywords = set()
    for entry in dicom_anonymization_database_selector(PROFILE_EDITION)["ALL_TAGS"]:
        if len(entry) == 2:
            keyword = keyword_for_tag((entry[0] << 16) | entry[1])
            if keyword:
                keywords.add(keyword)
            continue
        # (group, element, group mask, element mask): a repeating group such as 60xx (overlays)
        group, element, gmask, emask = entry
        base, mask = (group << 16) | element, (gmask << 16) | emask
        for tag, info in DicomDictionary.items():
            if tag & mask == base & mask and info[4]:
                keywords.add(info[4])
        for pattern, info in RepeatersDictionary.items():
            tag = int(pattern.replace("x", "0"), 16)
            if tag & mask == base & mask and info[4]:
                keywords.add(info[4])
    return frozenset(keywords)


def is_sensitive(key: str, private: bool = False) -> bool:
    return private or key in profile_keywords()


def redaction_enabled(flag: bool | None, mode: str = "auto",
                      environ: dict[str, str] | None = None) -> bool:
    """``--redact`` / ``--no-redact`` win; else reconciler.yaml ``redact``: ``always``,
    ``never``, or ``auto`` = on when the ``CI`` environment variable is set."""
    if flag is not None:
        return flag
    if mode == "always":
        return True
    if mode == "never":
        return False
    env = os.environ if environ is None else environ
    return env.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _length(value: Any) -> str:
    if isinstance(value, list):
        if value and all(isinstance(v, dict) for v in value):
            return f"items={len(value)}"
        return f"len={len(chr(92).join('' if v is None else str(v) for v in value))}"
    return f"len={len(str(value))}"


class Redactor:
    """Renders values for output. One random key per run (or the state's redaction key, when
    given), so that equal values look equal within one output but cannot be tested against a
    guess, nor compared across states."""

    def __init__(self, enabled: bool, key: bytes | None = None):
        self.enabled = enabled
        self._key = key if key is not None else secrets.token_bytes(32)

    def digest(self, value: Any) -> str:
        return hmac.new(self._key, canonical_bytes(value), hashlib.sha256).hexdigest()[:6]

    def show(self, key: str, value: Any, vr: str | None, private: bool = False) -> Any:
        """``value`` itself, or its redacted marker when redaction is on and ``key`` is
        sensitive. Empty values (``None``) carry nothing to hide and stay as they are."""
        if not self.enabled or value is None or not is_sensitive(key, private):
            return value
        return f"<redacted {vr or 'UN'} {_length(value)} sha256:{self.digest(value)}>"
