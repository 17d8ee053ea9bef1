"""`ttp_ray.console.quiet`: child processes, logging and prints go to the log file; `say`/`show` to the terminal."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_quiet_sends_everything_but_the_stage_lines_to_the_log(tmp_path) -> None:
    log = tmp_path / "logs" / "console.log"
    script = textwrap.dedent(f"""
        import logging, os, subprocess, sys
        from ttp_ray import console
        logging.basicConfig(level=logging.INFO)
        with console.quiet({str(log)!r}):
            console.say("stage one")
            print("noisy print")
            logging.getLogger("ray").warning("noisy warning")
            subprocess.run(["sh", "-c", "echo noisy child; echo noisy child err >&2"], check=True)
            console.show("the table")
        print("after the block")
        try:
            with console.quiet({str(log)!r}):
                raise RuntimeError("boom")
        except RuntimeError:
            print("error reaches the terminal", file=sys.stderr)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.splitlines() == ["[ttp] stage one", "the table", "after the block"]
    assert out.stderr.strip() == "error reaches the terminal"
    text = log.read_text()
    for noisy in ("noisy print", "noisy warning", "noisy child", "noisy child err"):
        assert noisy in text, noisy
    assert "stage one" not in text and "the table" not in text
