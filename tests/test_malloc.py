"""Large blocks are given back to the OS once freed (glibc), measured in fresh processes."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")

# Free a 30 MB block (glibc's adaptive threshold then rises to 30 MB), then use and
# free a 20 MB one: print how much of it is still resident afterwards, in KiB.
_CHURN = """
import sys
from pathlib import Path
from mailmux.malloc import release_large_blocks

def rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")

if sys.argv[1] == "fixed":
    assert release_large_blocks()
first = bytearray(30 << 20)
first[::4096] = b"x" * len(range(0, 30 << 20, 4096))
del first
before = rss()
second = bytearray(20 << 20)
second[::4096] = b"x" * len(range(0, 20 << 20, 4096))
del second
print(rss() - before)
"""


def kept_kib(mode: str) -> int:
    done = subprocess.run(
        [sys.executable, "-c", _CHURN, mode], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return int(done.stdout)


def test_a_freed_large_block_stays_resident_by_default_and_not_once_released() -> None:
    assert kept_kib("adaptive") > 15_000  # the 20 MB block came from the heap and stayed
    assert kept_kib("fixed") < 2_000
