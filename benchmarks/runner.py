"""What every one-command benchmark does around its own phases: a work directory,
children that are all stopped at the end (also on Ctrl-C), and one exit status.

`run_bench("shaped", measure)` calls `measure(children, workdir)` and prints the text
it returns. Exit status: 0 when the run completed (whether or not its targets were
met), 1 when a child failed, 130 when interrupted.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from processes import ChildFailed, Children
from run import _raise_file_limit

Measure = Callable[[Children, Path], str]


def run_bench(name: str, measure: Measure) -> int:
    _raise_file_limit()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILMUX_")}
    try:
        with (
            tempfile.TemporaryDirectory(prefix=f"mailmux-bench-{name}-") as tmp,
            Children(Path(tmp), env) as children,
        ):
            text = measure(children, Path(tmp))
    except ChildFailed as err:
        print(f"{name}.py: benchmark failed: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{name}.py: interrupted; every process it started was stopped", file=sys.stderr)
        return 130
    print(text)
    return 0
