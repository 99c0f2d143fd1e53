"""PHI redaction of values in output (docs/patient-data.md).

Which attributes are sensitive is not ours to decide: it is the list of the DICOM PS3.15 Basic
Application Level Confidentiality Profile (Table E.1-1), taken from the ``dicom-anonymizer``
package's tables of the 2026c edition, plus every private attribute (the profile removes
them all). A redacted value prints as ``<redacted PN len=8 sha256:1a2b3c>``: a short salted hash,
so a reviewer still sees that a value changed and whether two values are equal, without the
value. Logs never contain values at all; this module is for plan / drift / show output.
"""

from __future__ import annotations

import os
import secrets
from functools import cache
from typing import Any

from ..core.canonical import digest

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
    """Renders values for output. One salt per run (or the state's salt, when given), so that
    equal values look equal within one output but hashes are not comparable across runs."""

    def __init__(self, enabled: bool, salt: bytes | None = None):
        self.enabled = enabled
        self._salt = salt if salt is not None else secrets.token_bytes(16)

    def digest(self, value: Any) -> str:
        return digest(value, self._salt)[:6]

    def show(self, key: str, value: Any, vr: str | None, private: bool = False) -> Any:
        """``value`` itself, or its redacted marker when redaction is on and ``key`` is
        sensitive. Empty values (``None``) carry nothing to hide and stay as they are."""
        if not self.enabled or value is None or not is_sensitive(key, private):
            return value
        return f"<redacted {vr or 'UN'} {_length(value)} sha256:{self.digest(value)}>"
