"""Exactly-once storage: atomic parts, idempotent retries, epoch fencing, validation catches every violation."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from ttp_ray.errors import TTPValidationError
from ttp_ray.generation import store
from ttp_ray.generation.store import ExactlyOnceError, StaleRunError


def cands(queries: list[tuple[str, str]], n: int, *, idx: list[int] | None = None) -> pa.Table:
    rows = [{"user_id": u, "query_id": q, "cand_idx": k, "mode": "eval", "query_text": "q", "text": f"t{k}",
             "num_tokens": 3, "logprob": -1.0, "rouge1": 0.5, "rougeL": 0.5}
            for u, q in queries for k in (idx if idx is not None else range(n))]
    return pa.Table.from_pylist(rows)


FP = {"n": 2, "model": "m"}


def test_commit_resume_and_validate(tmp_path: Path) -> None:
    epoch = store.begin_run(tmp_path, FP)
    store.commit_part(cands([("u1", "a"), ("u1", "b")], 2), tmp_path, epoch=epoch)
    store.commit_part(cands([("u2", "c")], 2), tmp_path, epoch=epoch)
    assert store.done_keys(tmp_path) == {("u1", "a"), ("u1", "b"), ("u2", "c")}
    planned = [("u1", "a"), ("u1", "b"), ("u2", "c"), ("u2", "d")]
    counts = store.validate_output(tmp_path, planned, [("u2", "d")], 2)
    assert counts == {"queries": 3, "candidates": 6, "errored": 1}
    assert store.read_candidates(tmp_path).num_rows == 6


def test_a_retried_batch_rewrites_the_same_part(tmp_path: Path) -> None:
    epoch = store.begin_run(tmp_path, FP)
    first = store.commit_part(cands([("u1", "a"), ("u1", "b")], 2), tmp_path, epoch=epoch)
    again = store.commit_part(cands([("u1", "b"), ("u1", "a")], 2), tmp_path, epoch=epoch)
    assert first == again and len(store.part_paths(tmp_path)) == 1
    store.validate_output(tmp_path, [("u1", "a"), ("u1", "b")], [], 2)


def test_validation_catches_duplicates_missing_and_bad_counts(tmp_path: Path) -> None:
    epoch = store.begin_run(tmp_path, FP)
    store.commit_part(cands([("u1", "a")], 2), tmp_path, epoch=epoch)
    store.commit_part(cands([("u1", "a"), ("u1", "b")], 2), tmp_path, epoch=epoch)  # "a" stored twice
    with pytest.raises(ExactlyOnceError, match="'a' of user 'u1' is in two parts"):
        store.validate_output(tmp_path, [("u1", "a"), ("u1", "b")], [], 2)
    with pytest.raises(ExactlyOnceError, match="'z' of user 'u1' is missing"):
        store.validate_output(tmp_path, [("u1", "a"), ("u1", "b"), ("u1", "z")], [], 2)


@pytest.mark.parametrize("idx", [[0], [0, 0], [1, 2], [0, 1, 2]])
def test_validation_catches_wrong_candidate_sets(tmp_path: Path, idx: list[int]) -> None:
    epoch = store.begin_run(tmp_path, FP)
    store.commit_part(cands([("u1", "a")], 2, idx=idx), tmp_path, epoch=epoch)
    with pytest.raises(ExactlyOnceError, match="expected 0..1"):
        store.validate_output(tmp_path, [("u1", "a")], [], 2)


def test_unplanned_and_stored_plus_errored_are_violations(tmp_path: Path) -> None:
    epoch = store.begin_run(tmp_path, FP)
    store.commit_part(cands([("u1", "a"), ("u9", "x")], 2), tmp_path, epoch=epoch)
    with pytest.raises(ExactlyOnceError, match="'x' of user 'u9' is stored but was not planned"):
        store.validate_output(tmp_path, [("u1", "a")], [], 2)
    with pytest.raises(ExactlyOnceError, match="both stored and in errors"):
        store.validate_output(tmp_path, [("u1", "a"), ("u9", "x")], [("u1", "a")], 2)


def test_a_newer_run_fences_out_actors_of_the_old_one(tmp_path: Path) -> None:
    old = store.begin_run(tmp_path, FP)
    new = store.begin_run(tmp_path, FP)
    assert new == old + 1
    with pytest.raises(StaleRunError, match="epoch"):
        store.commit_part(cands([("u1", "a")], 2), tmp_path, epoch=old)
    assert store.part_paths(tmp_path) == [] and not list(tmp_path.glob(".*.tmp"))


def test_settings_change_needs_overwrite(tmp_path: Path) -> None:
    epoch = store.begin_run(tmp_path, FP)
    store.commit_part(cands([("u1", "a")], 2), tmp_path, epoch=epoch)
    with pytest.raises(TTPValidationError, match=r"changed: \['n'\]"):
        store.begin_run(tmp_path, {**FP, "n": 3})
    store.begin_run(tmp_path, {**FP, "n": 3}, overwrite=True)
    assert store.part_paths(tmp_path) == []


def test_leftover_temp_files_are_removed_and_never_counted(tmp_path: Path) -> None:
    store.begin_run(tmp_path, FP)
    (tmp_path / ".part-x.parquet.123.ab.tmp").write_bytes(b"half a parquet file")
    assert store.done_keys(tmp_path) == set()
    store.begin_run(tmp_path, FP)
    assert not list(tmp_path.glob(".*.tmp"))


def test_errors_file_has_the_errors_schema(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    from ttp_ray.data.schema import ERRORS

    path = store.write_errors(tmp_path, [{"stage": "generate", "file": "q.parquet", "record_id": "a",
                                          "field": "query_text", "reason": "too long"}])
    t = pq.read_table(path)
    assert t.schema.equals(ERRORS) and t.num_rows == 1
    assert pq.read_table(store.write_errors(tmp_path, [])).num_rows == 0
