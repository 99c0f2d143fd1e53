"""Run the `run:` steps of the example GitHub Actions workflows locally, as a runner would.

Only steps that invoke ``reconciler`` are run (``uses:`` actions and ``gh`` calls need GitHub);
each runs in ``bash -eo pipefail`` (what ``shell: bash`` means on GitHub) in the checkout, with
the workflow's, the job's and the step's ``env`` (the few ``${{ }}`` expressions they hold are
given by the test), ``GITHUB_OUTPUT`` / ``GITHUB_STEP_SUMMARY`` files, and the environment the
test sets up to stand in for AWS (the emulator's and moto's endpoints). ``reconciler`` is the
console script of the running venv.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

WORKFLOWS = Path(__file__).resolve().parents[2] / "examples" / "gitops" / ".github" / "workflows"
BIN = Path(sys.executable).parent
EXPRESSION = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")
RECONCILER_LINE = re.compile(r"^\s*reconciler\s", re.MULTILINE)


def load(name: str) -> dict[str, Any]:
    """A workflow as data. YAML 1.2 (ruamel), as GitHub reads it: ``on`` stays a string."""
    return YAML(typ="safe").load((WORKFLOWS / name).read_text(encoding="utf-8"))


def reconciler_commands(script: str) -> list[str]:
    return [line.strip() for line in script.splitlines() if RECONCILER_LINE.match(line)]


def reconciler_steps(workflow: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(job, step) for job, body in workflow["jobs"].items() for step in body["steps"]
            if "run" in step and reconciler_commands(step["run"])]


@dataclass
class StepResult:
    name: str
    exit_code: int
    stdout: str
    stderr: str
    outputs: dict[str, str] = field(default_factory=dict)
    summary: str = ""


def _expand(value: Any, expressions: dict[str, str]) -> str:
    def one(match: re.Match) -> str:
        if match.group(1) not in expressions:
            raise KeyError(f"the test gives no value for ${{{{ {match.group(1)} }}}}")
        return expressions[match.group(1)]
    return EXPRESSION.sub(one, str(value))


@dataclass
class Runner:
    """Runs workflow steps in ``checkout`` with ``base_env`` (the stand-ins for AWS)."""
    checkout: Path
    base_env: dict[str, str]
    expressions: dict[str, str] = field(default_factory=dict)
    ran: set[tuple[str, str]] = field(default_factory=set)

    def run(self, workflow_name: str, step_name: str | None = None) -> dict[str, StepResult]:
        """Every reconciler step of the workflow (or only ``step_name``), in order; a failing
        step stops the job, as on GitHub. Returns the results by step name."""
        workflow = load(workflow_name)
        results: dict[str, StepResult] = {}
        for job, step in reconciler_steps(workflow):
            if step_name is not None and step["name"] != step_name:
                continue
            env = dict(self.base_env)
            for scope in (workflow.get("env"), workflow["jobs"][job].get("env"), step.get("env")):
                env.update({k: _expand(v, self.expressions) for k, v in (scope or {}).items()})
            result = self._step(step, env)
            results[step["name"]] = result
            self.ran.add((workflow_name, step["name"]))
            if result.exit_code != 0:
                break
        if step_name is not None and step_name not in results:
            raise KeyError(f"{workflow_name} has no reconciler step named {step_name!r}")
        return results

    def _step(self, step: dict[str, Any], env: dict[str, str]) -> StepResult:
        work = self.checkout / step.get("working-directory", ".")
        runner_temp = self.checkout.parent / "runner-temp"
        runner_temp.mkdir(exist_ok=True)
        output, summary = runner_temp / "output", runner_temp / "summary"
        output.write_text("")
        summary.write_text("")
        env.update(GITHUB_OUTPUT=str(output), GITHUB_STEP_SUMMARY=str(summary),
                   PATH=f"{BIN}{os.pathsep}{env.get('PATH', os.defpath)}")
        proc = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c",
                               step["run"]], cwd=work, env=env, capture_output=True, text=True,
                              timeout=120)
        outputs = dict(line.split("=", 1) for line in output.read_text().splitlines() if "=" in line)
        return StepResult(step["name"], proc.returncode, proc.stdout, proc.stderr, outputs,
                          summary.read_text())
