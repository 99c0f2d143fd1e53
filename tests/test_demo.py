"""`make demo` under the strictest reading of primary image sets (DEMO_BEHAVIOURS), as the
README documents it: the plan refuses, before any write, what that service forbids, naming the
rule and the way out, and the demo goes on with what it allows. A real subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_demo_runs_under_the_strictest_primary_reading():
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_ENDPOINT_URL")}
    env["DEMO_BEHAVIOURS"] = "primary_restriction_include_study=refused"
    result = subprocess.run([sys.executable, str(ROOT / "examples" / "demo.py")], env=env,
                            capture_output=True, text=True, timeout=240)
    out = result.stdout
    assert result.returncode == 0, out[-3000:] + result.stderr[-2000:]
    assert "under the reading primary_restriction_include_study=refused" in out
    assert "Patient-level elements cannot be updated on a primary image set" in out
    assert "CopyImageSet" in out                                      # the way out
    assert "The demo goes on with what this service allows: nm-bone" in out
    assert "Rollback complete: 1 applied." in out
    final = out[out.rindex("==> drift: everything in sync"):]
    assert "Drift: 0 drifted, 0 missing, 0 changed elsewhere, 1 in sync, 0 not applied." in final
    assert out.rstrip().endswith("the working directory was removed")
