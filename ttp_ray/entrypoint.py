"""The exit-status convention shared by `jobs/*.py`: 0 ok, 2 bad input or config, 1 anything else."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

from ttp_ray.errors import DataError, TTPValidationError

BAD_INPUT: tuple[type[BaseException], ...] = (TTPValidationError, DataError, FileNotFoundError)


def run_job(prog: str, body: Callable[[], object], bad_input: tuple[type[BaseException], ...] = BAD_INPUT) -> int:
    """Run `body`; a `bad_input` error is one line on stderr (exit 2), anything else is logged with its traceback
    and summarised on stderr (exit 1), so `ray job submit` shows why without digging through the logs."""
    try:
        body()
    except bad_input as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:
        logging.getLogger(f"ttp.{prog}").exception("%s failed", prog)
        print(f"{prog}: failed: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    return 0
