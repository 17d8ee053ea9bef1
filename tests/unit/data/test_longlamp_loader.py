"""`load_longlamp`: JSON / JSONL / Parquet rows, per-task profile maps, bad rows."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ttp_ray.data.longlamp import load_longlamp
from ttp_ray.errors import DataError, TTPValidationError

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "data"

ABSTRACT_ROWS = [
    {"input": 'Generate an abstract for the title "Fast LCS" using the following items: 1. bit-parallel 2. ROUGE',
     "output": "We show that bit-parallel LCS makes ROUGE fast.",
     "profile": [{"title": "Old paper", "abstract": "We did something before.", "id": "p1"},
                 {"title": "Another", "abstract": "More work, naïvely."}]},
    {"input": 'Generate an abstract for the title "Second" using the following items: 1. x',
     "output": "Second abstract.", "profile": []},
]


def write_rows(path: Path, rows: list[dict[str, Any]]) -> Path:
    if path.suffix == ".parquet":
        pq.write_table(pa.Table.from_pylist(rows), path)
    elif path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    else:
        path.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    return path


@pytest.mark.parametrize("suffix", [".json", ".jsonl", ".parquet"])
def test_abstract_rows_in_every_format(tmp_path: Path, suffix: str) -> None:
    ds = load_longlamp(write_rows(tmp_path / f"rows{suffix}", ABSTRACT_ROWS), task="abstract", name="abs")
    assert ds.task == "LongLaMP_abstract"
    assert ds.users.to_pylist() == [
        {"user_id": "r:r0", "n_profile": 2, "n_queries": 1, "dataset": "abs"},
        {"user_id": "r:r1", "n_profile": 0, "n_queries": 1, "dataset": "abs"},  # empty profile is kept
    ]
    p = ds.profile.to_pylist()
    assert (p[0]["item_id"], p[0]["input"], p[0]["output"]) == ("p1", "Old paper", "We did something before.")
    assert p[1]["item_id"] == "r0:1" and p[1]["output"] == "More work, naïvely."  # generated id, text verbatim
    q = ds.queries.to_pylist()[0]
    assert q["query_text"] == "1. bit-parallel 2. ROUGE" and q["reference"].startswith("We show")
    assert ds.errors.num_rows == 0


def test_review_fixture_maps_rating_summary_description() -> None:
    ds = load_longlamp(FIXTURES / "longlamp_review_small.jsonl", task="review", name="rev")
    first = ds.profile.to_pylist()[0]
    assert first["input"] == "rating: 4.0; summary: Solid pan; product: Cast iron skillet"
    assert first["output"] == "Heavy but heats evenly; seasoning took a while."
    assert ds.profile.to_pylist()[1]["input"].startswith("rating: 2.0;")  # string ratings work too
    assert ds.queries["query_text"].to_pylist()[0] == ds.queries["input"].to_pylist()[0]  # whole input
    assert ds.summary()["n_queries_with_reference"] == 2


def test_topic_rows_with_user_ids(tmp_path: Path) -> None:
    rows = [{"id": 1, "user_id": "alice", "input": "Write a post about cats", "output": "Cats rule.",
             "profile": [{"input": "dogs summary", "output": "Dogs drool."}]},
            {"id": 2, "user_id": "alice", "input": "Write a post about mice", "output": "Mice squeak.",
             "profile": [{"input": "dogs summary", "output": "Dogs drool."}]}]
    ds = load_longlamp(write_rows(tmp_path / "t.json", rows), task="topic", name="topic")
    assert ds.users.to_pylist() == [{"user_id": "alice", "n_profile": 2, "n_queries": 2, "dataset": "topic"}]
    assert ds.queries["query_id"].to_pylist() == ["1", "2"]


def test_bad_rows(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    good = json.dumps(ABSTRACT_ROWS[0])
    bad_item = json.dumps({**ABSTRACT_ROWS[1], "profile": [{"title": "t", "abstract": 5}]})
    path.write_text(f'{good}\n{{"input": "broken\n{bad_item}\n{{"output": "x", "profile": []}}\n')
    ds = load_longlamp(path, task="abstract", name="x", max_error_rate=1.0)
    rows = ds.errors.to_pylist()
    assert [(r["record_id"], r["field"]) for r in rows] == [("line 2", None), ("r2", "profile[0].abstract"),
                                                             ("r3", "input")]
    assert "invalid JSON at line 2" in rows[0]["reason"]
    assert ds.queries["query_id"].to_pylist() == ["r0", "r2"]  # the row with a bad item is kept
    with pytest.raises(DataError, match=r"rows\.jsonl.*invalid JSON at line 2"):
        load_longlamp(path, task="abstract", name="x", strict=True)


def test_profile_not_a_list_and_unknown_task(tmp_path: Path) -> None:
    path = write_rows(tmp_path / "r.json", [{"input": "x", "output": "y", "profile": "nope"}])
    with pytest.raises(DataError, match=r"r\.json, record 'r0', field 'profile': 'profile' must be a list, got str"):
        load_longlamp(path, task="abstract", name="x", strict=True)
    with pytest.raises(TTPValidationError, match="unknown LongLaMP task 'email'"):
        load_longlamp(path, task="email", name="x")  # type: ignore[arg-type]
