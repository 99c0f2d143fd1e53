"""Credentials never reach output or logs, even with --verbose and on error paths; the
emulator binds to loopback unless told otherwise."""

import os
import subprocess
import sys

from reconciler.emulator.server import ServeOptions

SECRET = "wJalrXUtnFEMI-K7MDENG-SECRETMARKER"
KEY_ID = "AKIAEXAMPLEMARKER0001"
TOKEN = "FwoGZXIvYXdzEXAMPLESESSIONTOKENMARKER"


def test_credentials_are_never_printed(example_project, emulator):
    env = dict(os.environ, AWS_ENDPOINT_URL_MEDICAL_IMAGING=emulator.url,
               AWS_ACCESS_KEY_ID=KEY_ID, AWS_SECRET_ACCESS_KEY=SECRET, AWS_SESSION_TOKEN=TOKEN)
    env.pop("CI", None)
    runs = [["--verbose", "plan"], ["--verbose", "apply", "--auto-approve"],
            ["--verbose", "drift"],
            ["--verbose", "--endpoint-url", "http://127.0.0.1:9", "plan"]]  # an error path
    for args in runs:
        result = subprocess.run([sys.executable, "-m", "reconciler", *args], cwd=example_project,
                                env=env, capture_output=True, text=True, timeout=120)
        for marker in (SECRET, KEY_ID, TOKEN):
            assert marker not in result.stdout + result.stderr, args
    assert result.returncode == 1 and "Error:" in result.stderr


def test_the_emulator_binds_to_loopback_by_default():
    assert ServeOptions().host == "127.0.0.1"
