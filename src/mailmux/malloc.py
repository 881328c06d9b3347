"""Large buffers go back to the operating system as soon as they are freed.

glibc's malloc serves a block of at least `M_MMAP_THRESHOLD` bytes with a
mapping of its own and unmaps it on free. By default that threshold adapts:
after such a block is freed it rises to the block's size (up to 32 MiB), so
later blocks up to that size come from the heap, whose freed memory glibc
keeps and fragments. A large message passes through several buffers of tens
of megabytes (the request body, the decoded attachment, the spool payload),
so with the adaptive threshold large messages leave memory behind:
`benchmarks/large.py` measured a peak of 453 MB spooling eight concurrent
20 MiB messages three times over, against 401 MB with the threshold fixed
at 1 MiB.

Fixing it costs one mmap and one munmap per block of 1 MiB or more — none
on the path of an ordinary message, whose buffers are kilobytes.
"""

from __future__ import annotations

import ctypes
import platform

_M_MMAP_THRESHOLD = -3  # from glibc's malloc.h
LARGE_BLOCK = 1 << 20


def release_large_blocks(threshold: int = LARGE_BLOCK) -> bool:
    """Fix glibc's mmap threshold at `threshold` bytes; False where that is not glibc."""
    if platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, threshold))
