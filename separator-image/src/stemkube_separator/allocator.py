"""glibc malloc settings for a process that runs a model on the CPU and then exits.

By default glibc serves every allocation above its mmap threshold (at most 32 MiB) with a
fresh ``mmap`` and returns it to the kernel on ``free``, and trims the heap's free top. Demucs
allocates and frees large activations for every segment, so the kernel maps and zeroes the
same memory again and again: with full-size htdemucs on 2 CPU cores, 2 million page faults
and 4 s of system time per 20 s of audio, 15-20% of the separation's wall time. Serving
everything from the heap and never trimming it lets freed memory be reused as it is, for
somewhat more peak memory (measured in ``bench/README.md``): freed blocks that the next
allocations do not fit stay resident. Between chunks of a long song the free pages are given
back (``release_free_memory``), so that this does not add up from one chunk to the next.
"""

import ctypes
import logging
from collections.abc import Mapping

log = logging.getLogger(__name__)

# mallopt(3) parameters (glibc's malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
NEVER_TRIM = 2**31 - 1  # the largest value mallopt takes: the heap is never trimmed in practice


def user_tuned(env: Mapping[str, str]) -> bool:
    """Whether whoever started the process set glibc's malloc up themselves (``MALLOC_*``
    variables or ``glibc.malloc.*`` tunables): then their settings stand."""
    return any(name.startswith("MALLOC_") for name in env) or "glibc.malloc." in env.get(
        "GLIBC_TUNABLES", ""
    )


def _libc() -> ctypes.CDLL | None:
    libc = ctypes.CDLL(None)
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


def keep_freed_memory(env: Mapping[str, str]) -> bool:
    """Serve every allocation from the heap and never give it back to the kernel; return
    whether the settings were applied (not on a C library without glibc's ``mallopt``)."""
    if user_tuned(env):
        return False
    libc = _libc()
    if libc is None:  # not glibc (macOS): nothing to tune
        return False
    mallopt = libc.mallopt
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    applied = bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, NEVER_TRIM))
    if not applied:
        log.warning("mallopt refused the allocator settings; running with glibc's defaults")
    return applied


def release_free_memory() -> None:
    """Give the heap's free pages back to the kernel (``malloc_trim``): the memory a chunk's
    separation freed is not resident while the next chunk runs, except what it reuses."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
