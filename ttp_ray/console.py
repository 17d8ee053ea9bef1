"""The terminal a pipeline talks to: `[ttp]` stage lines and the final table; everything else can go to a file.

A run on a local Ray cluster writes megabytes to the terminal that are not for the person who started it: Ray
Data's progress bars, vLLM's engine logs and Ray Train's per-epoch reports, all forwarded to the driver's
stdout/stderr by Ray's log monitor. `quiet(log_path)` points the process's file descriptors 1 and 2 at a log
file under the run directory — so that output, the raylet and workers Ray starts inside the block (they
inherit the descriptors), Python's `logging` and tqdm all land there — while `say` and `show` keep writing to
the terminal through a duplicate of the original stdout. Outside `quiet`, `say` and `show` just print.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

__all__ = ["quiet", "say", "show"]

_terminal: TextIO | None = None  # set inside `quiet`: the original stdout


def show(text: str) -> None:
    """Print `text` to the terminal (also inside `quiet`)."""
    print(text, file=_terminal or sys.stdout, flush=True)


def say(msg: str) -> None:
    """One `[ttp]` progress line on the terminal (also inside `quiet`)."""
    show(f"[ttp] {msg}")


@contextmanager
def quiet(log_path: str | Path) -> Iterator[Path]:
    """Send everything written to fds 1 and 2 inside the block to `log_path` (appended); `say`/`show` still
    reach the terminal. The descriptors are restored on exit, also when the block raises, so an error message
    printed by the caller reaches the terminal."""
    global _terminal
    path = Path(log_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved_out, saved_err = os.dup(1), os.dup(2)
    previous = _terminal
    _terminal = os.fdopen(os.dup(1), "w", buffering=1)
    with open(path, "ab") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
    try:
        yield path
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved_out, 1)
        os.dup2(saved_err, 2)
        os.close(saved_out)
        os.close(saved_err)
        _terminal.close()
        _terminal = previous
