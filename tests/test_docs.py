"""The documentation stays inside the repository and true to its files.

* No tracked file refers to a document outside the repository (the project's working notes
  live beside it, not in it): a reader of a clone must be able to follow every reference.
  Cite the pages of docs/ instead (docs/service-notes.md for facts about HealthImaging).
* Every repository path that the README and docs/ name exists, so a module that moves without
  its documentation fails here, with the page to update.

``make docs`` (mkdocs build --strict, in CI) checks the links and anchors between pages.
"""

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Spelled in pieces so that this file does not match itself.
OUTSIDE = re.compile("|".join([r"\.\./" + "shared", r"\bproduct" + r"\.md\b",
                               r"\bhealthimaging" + r"\.md\b"]))


def tracked_files() -> list[Path]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True)
    return [ROOT / name for name in out.stdout.decode("utf-8").split("\0") if name]


def test_no_reference_to_documents_outside_the_repository():
    found = []
    for path in tracked_files():
        if not path.is_file():          # deleted in the work tree, not yet committed
            continue
        text = path.read_bytes().decode("utf-8", errors="ignore")
        for number, line in enumerate(text.splitlines(), 1):
            if OUTSIDE.search(line):
                found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()[:100]}")
    assert not found, ("references to documents outside the repository; cite docs/ instead:\n"
                       + "\n".join(found))


# Paths as the documentation writes them: in code spans or markdown links, starting with a
# top-level directory of the repository.
DOCUMENTED_PATH = re.compile(
    r"(?<![\w./-])((?:reconciler|tests|schemas|examples|benchmarks)/[\w./-]*\w)")


def documentation() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_the_paths_the_documentation_names_exist():
    missing = []
    for page in documentation():
        for number, line in enumerate(page.read_text("utf-8").splitlines(), 1):
            for name in DOCUMENTED_PATH.findall(line):
                if "<" in name or "*" in name or re.fullmatch(r"reconciler/v\d+", name):
                    continue                # a placeholder, a glob, the spec apiVersion
                if not (ROOT / name).exists():
                    missing.append(f"{page.relative_to(ROOT)}:{number}: {name}")
    assert not missing, "paths named in the documentation that do not exist:\n" + "\n".join(missing)


def test_the_readme_quick_start_commands_are_make_targets():
    readme = (ROOT / "README.md").read_text("utf-8")
    makefile = (ROOT / "Makefile").read_text("utf-8")
    for target in ("demo", "test", "docs"):
        assert f"make {target}" in readme
        assert re.search(rf"^{target}:", makefile, re.M), f"Makefile has no {target} target"


def test_ci_runs_the_tests_then_the_docs():
    ci = (ROOT / ".ci" / "run").read_text("utf-8")
    assert "set -euo pipefail" in ci
    assert ci.index("make test") < ci.index("make docs")
