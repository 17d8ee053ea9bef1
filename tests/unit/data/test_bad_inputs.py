"""`ttp data load` on the bad-input corpus (`tests/fixtures/bad_inputs/`, cases in `expected.yaml`).

Every case ends in one of two ways: exit 0 with exactly the expected ERRORS rows, or exit 2 with one
`ttp: error:` line naming the file and the field. Never a traceback, and no record is lost silently: the
records of the input file = the queries loaded + the error rows that rejected a whole record.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from ttp_ray.cli import app

CORPUS = Path(__file__).resolve().parents[2] / "fixtures" / "bad_inputs"
EXPECTED: dict[str, dict[str, Any]] = yaml.safe_load((CORPUS / "expected.yaml").read_text(encoding="utf-8"))
ABSTRACT = 'Generate an abstract for the title "{}" using the following items: 1. a'
HUGE = 4_000_000  # characters of the generated huge strings
ITEM = pa.struct([("id", pa.string()), ("title", pa.string()), ("abstract", pa.string()),
                  ("date", pa.timestamp("s"))])


def _row(title: str, profile: list[dict[str, Any]] | None = None, **extra: Any) -> dict[str, Any]:
    return {"input": ABSTRACT.format(title), "output": f"{title}.", "profile": profile or [], **extra}


def _item(title: str | None, date: dt.datetime | None = None, id: str | None = None) -> dict[str, Any]:
    return {"id": id, "title": title, "abstract": "An abstract.", "date": date}


def write_generated(root: Path) -> None:
    """The corpus files that are awkward to commit: Parquet (binary) and huge strings."""
    lamp_q = [{"id": "h1", "input": "Generate a headline for the following article: " + "word " * (HUGE // 5),
               "profile": [{"id": "p1", "text": "t", "title": "x" * (HUGE // 4)}]},
              {"id": "h2", "input": "Generate a headline for the following article: short", "profile": []}]
    (root / "lamp" / "huge.json").write_text(json.dumps(lamp_q), encoding="utf-8")
    rows = [_row("y" * HUGE, [{"title": "t", "abstract": "z" * HUGE}]), _row("Short")]
    (root / "longlamp" / "huge.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")

    schema = pa.schema([("id", pa.string()), ("input", pa.string()), ("output", pa.string()),
                        ("profile", pa.list_(ITEM))])
    wrong = [_row("Dated", [_item("Kept", dt.datetime(2020, 1, 2, 3, 4)), _item(None)], id="pq1"),
             {**_row("Null input", id="pq2"), "input": None},
             _row("Null item id", [_item("Generated id")], id="pq3"),
             {**_row("Null id"), "id": None}]
    pq.write_table(pa.Table.from_pylist(wrong, schema=schema), root / "longlamp" / "wrong_types.parquet")
    raw = pa.array([ABSTRACT.format("One").encode(), b"Caf\xe9", ABSTRACT.format("Three").encode()], pa.binary())
    pq.write_table(pa.table({"id": ["u1", "u2", "u3"], "input": raw.view(pa.string()),
                             "output": ["One.", "Two.", "Three."], "profile": pa.array([[], [], []], pa.list_(ITEM))}),
                   root / "longlamp" / "not_utf8.parquet")
    pq.write_table(pa.table({"input": [ABSTRACT.format("A"), ABSTRACT.format("B")], "output": [1, 2],
                             "profile": pa.array([[], []], pa.list_(ITEM))}), root / "longlamp" / "int_output.parquet")
    pq.write_table(schema.empty_table(), root / "longlamp" / "zero_rows.parquet")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bad_inputs") / "corpus"
    shutil.copytree(CORPUS, root)
    write_generated(root)
    return root


def _args(case: str, run_dir: Path) -> list[str]:
    spec = EXPECTED[case]
    config = ["-c", spec["config"]] if "config" in spec else ["-c", "datasets.yaml", "-d", case]
    return ["data", "load", *config, "--set", f"run_dir={run_dir}"]


def _records(path: Path) -> int:
    """Top-level records of an input file, counted without the loaders."""
    if path.suffix == ".parquet":
        return pq.read_metadata(path).num_rows
    if path.suffix == ".jsonl":
        return sum(bool(line.strip()) for line in path.read_bytes().splitlines())
    return len(json.loads(path.read_bytes().decode("utf-8-sig", errors="surrogateescape")))


def check_outcome(case: str, code: int, stderr: str, run_dir: Path, corpus: Path) -> None:
    spec = EXPECTED[case]
    assert "Traceback" not in stderr
    assert code == spec["exit"], stderr
    error_lines = [line for line in stderr.splitlines() if line.startswith("ttp: error:")]
    out = run_dir / "data" / case
    if spec["exit"] == 2:
        [line] = error_lines
        for fragment in spec["line"]:
            assert fragment in line, line
    else:
        assert error_lines == []
        assert json.loads((out / "summary.json").read_text())["n_queries"] == spec["queries"]
    if "errors" not in spec:  # the load failed before any record was read
        assert not (out / "errors.parquet").exists()
        return
    rows = pq.read_table(out / "errors.parquet").to_pylist()
    assert [[r["file"], r["record_id"], r["field"], r["reason"]] for r in rows] == spec["errors"]
    assert {r["stage"] for r in rows} <= {"load"}
    if spec["exit"] == 2:
        return
    # nothing dropped silently: records in = queries out + records rejected
    cfg = yaml.safe_load((corpus / spec.get("config", "datasets.yaml")).read_text(encoding="utf-8-sig"))
    [d] = [d for d in cfg["datasets"] if d["name"] == case]
    source = d.get("questions") or d["path"]
    rejected = sum(r["file"] == source and not (r["field"] or "").startswith("profile[") for r in rows)
    assert _records(corpus / source) == spec["queries"] + rejected
    assert pq.read_metadata(out / "profile.parquet").num_rows == spec["profile_items"]
    if "max_input_chars" in spec:
        inputs = pq.read_table(out / "queries.parquet").column("input").to_pylist()
        assert max(map(len, inputs)) == spec["max_input_chars"]


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_data_load_on_bad_input(case: str, corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(corpus)
    result = CliRunner().invoke(app, _args(case, tmp_path / "run"))
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    check_outcome(case, result.exit_code, result.stderr + result.stdout, tmp_path / "run", corpus)


@pytest.mark.parametrize("case", ["lamp_lone_surrogate", "longlamp_all_bad"])
def test_ttp_process_on_bad_input(case: str, corpus: Path, tmp_path: Path) -> None:
    """The real `ttp` process: exit status, a one-line error and no traceback on stderr (log lines aside)."""
    ttp = Path(sys.executable).with_name("ttp")
    cmd = [str(ttp)] if ttp.is_file() else [sys.executable, "-c", "from ttp_ray.cli import main; main()"]
    env = dict(os.environ, HF_HUB_OFFLINE="1", RAY_USAGE_STATS_ENABLED="0")
    proc = subprocess.run([*cmd, *_args(case, tmp_path / "run")], cwd=corpus, env=env, capture_output=True,
                          text=True, timeout=300)
    check_outcome(case, proc.returncode, proc.stderr, tmp_path / "run", corpus)


def test_every_corpus_file_is_used() -> None:
    cfg = yaml.safe_load((CORPUS / "datasets.yaml").read_text())
    used = {d[k] for d in cfg["datasets"] for k in ("questions", "outputs", "path") if k in d}
    used |= {spec["config"] for spec in EXPECTED.values() if "config" in spec}
    committed = {p.relative_to(CORPUS).as_posix() for p in CORPUS.rglob("*") if p.is_file()}
    assert committed - used == {"README.md", "datasets.yaml", "expected.yaml"}
    assert {d["name"] for d in cfg["datasets"]} <= set(EXPECTED)
