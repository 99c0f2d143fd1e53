"""Run the real ``reconciler`` CLI in this process and report its resource usage.

``python benchmarks/_child.py RUSAGE_JSON -- reconciler-args...``: the exit code is the CLI's;
``RUSAGE_JSON`` receives the peak RSS (``VmHWM``, KiB) and CPU times of the whole
process (interpreter and imports included: what a user's ``reconciler plan`` costs).
"""

import json
import resource
import sys


def peak_rss_kb() -> int:
    """This process's own peak RSS (VmHWM). Not ``ru_maxrss``: Linux carries the parent's
    high-water mark over fork + exec into it, so a child of a big parent reads the parent's."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def main() -> int:
    out, sep, *args = sys.argv[1:]
    assert sep == "--"
    from reconciler.cli import main as cli_main

    try:
        code = cli_main(args)
    except SystemExit as exc:  # click may still exit on --help and the like
        code = exc.code if isinstance(exc.code, int) else 1
    usage = resource.getrusage(resource.RUSAGE_SELF)
    with open(out, "w") as fh:
        json.dump({"maxrss_kb": peak_rss_kb(), "ru_maxrss_kb": usage.ru_maxrss, "utime": usage.ru_utime,
                   "stime": usage.ru_stime, "exit": code}, fh)
    return code or 0


if __name__ == "__main__":
    sys.exit(main())
