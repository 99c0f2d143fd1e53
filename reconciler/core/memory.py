"""Process-wide memory settings for the long runs over a fleet.

apply and plan run up to a hundred threads (reads, updates and their waits in flight). On glibc
every thread that allocates may get a malloc arena of its own, up to eight per core, and
memory freed in one arena is not reused by another: at 1,000 image sets an apply's peak RSS
was ~40 MB higher with the default arenas than with two (``MALLOC_ARENA_MAX=2``), for the same
Python objects. :func:`limit_malloc_arenas` asks glibc for at most two arenas unless the
user's environment already says how many (``MALLOC_ARENA_MAX``); elsewhere it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_ARENA_MAX = -8      # glibc's mallopt parameter number (malloc.h)
ARENAS = 2


def limit_malloc_arenas(arenas: int = ARENAS) -> bool:
    """Limit glibc's malloc arenas, before the threads start. True when glibc took it."""
    if not sys.platform.startswith("linux") or "MALLOC_ARENA_MAX" in os.environ:
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):       # musl and other libcs have no mallopt
        return False
    return bool(mallopt(M_ARENA_MAX, arenas))
