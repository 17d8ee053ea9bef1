"""Exactly-once storage: atomic parts, idempotent retries, epoch fencing, validation catches every violation,
and a rerun after any interruption (a leftover actor's late part, a crash mid-commit) completes by itself."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ttp_ray.data.schema import CANDIDATES
from ttp_ray.errors import DataError, TTPValidationError
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


# ------------------------------------------------------------------------------------------------ faults
# A run as `run_generation` drives the store, minus Ray: claim the directory, skip what is done, commit the
# pending queries in batches (batches differ between runs, as the pending set does), write errors, validate.
PLANNED = [(u, q) for u in ("u1", "u2") for q in "abcd"]


def resume(d: Path, epoch: int, planned: list[tuple[str, str]], *, batch: int = 3) -> dict[str, int]:
    done = store.done_keys(d)
    pending = [k for k in planned if k not in done]
    for i in range(0, len(pending), batch):
        store.commit_part(cands(pending[i:i + batch], 2), d, epoch=epoch)
    store.write_errors(d, [])
    return store.validate_output(d, planned, [], 2)


def run(d: Path, planned: list[tuple[str, str]], **kwargs) -> dict[str, int]:
    return resume(d, store.begin_run(d, FP), planned, **kwargs)


def land_unfenced(d: Path, keys: list[tuple[str, str]], epoch: int) -> Path:
    """A part of run `epoch` renamed into place without the fence (no working flock, or an older version)."""
    path = d / store.part_name(keys, epoch)
    pq.write_table(cands(keys, 2).cast(CANDIDATES), path)
    return path


def rows(t: pa.Table) -> list[tuple[str, str, int]]:
    return list(zip(t["user_id"].to_pylist(), t["query_id"].to_pylist(), t["cand_idx"].to_pylist(), strict=True))


def assert_exactly_once(d: Path, planned: list[tuple[str, str]], n: int = 2) -> None:
    expected = sorted((u, q, k) for u, q in planned for k in range(n))
    assert sorted(rows(store.read_candidates(d))) == expected
    # Downstream stages glob `part-*.parquet` themselves: the files on disk must be duplicate-free too.
    assert sorted(r for p in store.part_paths(d) for r in rows(pq.read_table(p))) == expected
    assert not list(d.glob(".*.tmp"))


def test_a_commit_that_passed_the_fence_lands_before_the_resumed_run_starts(tmp_path: Path, monkeypatch) -> None:
    """The race of issue 15: a leftover actor passes the epoch check just before the resumed run bumps it."""
    old = store.begin_run(tmp_path, FP)
    store.commit_part(cands(PLANNED[:2], 2), tmp_path, epoch=old)  # the killed run got this far
    real_epoch = store.current_epoch
    resumed: dict = {}

    def check_then_resume(out_dir):
        now = real_epoch(out_dir)  # the leftover actor passes the check (epoch is still `old`) ...
        t = threading.Thread(target=lambda: resumed.update(epoch=store.begin_run(tmp_path, FP)))
        t.start()  # ... and the resumed run starts right then
        t.join(0.5)
        resumed.update(thread=t, waited=t.is_alive())
        return now

    monkeypatch.setattr(store, "current_epoch", check_then_resume)
    late = store.commit_part(cands(PLANNED[2:5], 2), tmp_path, epoch=old)
    monkeypatch.setattr(store, "current_epoch", real_epoch)
    resumed["thread"].join(10)
    assert resumed["waited"], "begin_run must wait for a commit between its epoch check and its rename"
    assert resumed["epoch"] == old + 1 and late.is_file()
    assert store.done_keys(tmp_path) == set(PLANNED[:5])  # so the resumed run skips the late part's queries
    with pytest.raises(StaleRunError):  # and the fence holds from now on
        store.commit_part(cands(PLANNED[5:], 2), tmp_path, epoch=old)
    assert resume(tmp_path, resumed["epoch"], PLANNED) == {"queries": 8, "candidates": 16, "errored": 0}
    assert_exactly_once(tmp_path, PLANNED)


def test_a_late_part_of_an_older_run_is_settled_and_the_run_completes(tmp_path: Path) -> None:
    old = store.begin_run(tmp_path, FP)
    store.commit_part(cands(PLANNED[:2], 2), tmp_path, epoch=old)
    new = store.begin_run(tmp_path, FP)
    done = store.done_keys(tmp_path)
    stale = land_unfenced(tmp_path, PLANNED[2:5], old)  # lands after the resumed run planned its work
    pending = [k for k in PLANNED if k not in done]
    for batch in (pending[:1], pending[1:4], pending[4:]):
        store.commit_part(cands(batch, 2), tmp_path, epoch=new)
    assert store.read_candidates(tmp_path).num_rows == 16
    assert store.read_candidates(tmp_path, columns=["text"]).column_names == ["text"]
    assert store.read_candidates(tmp_path, columns=["text"]).num_rows == 16
    assert store.validate_output(tmp_path, PLANNED, [], 2) == {"queries": 8, "candidates": 16, "errored": 0}
    assert not stale.exists()
    assert_exactly_once(tmp_path, PLANNED)


def test_a_rerun_settles_a_late_part_left_by_two_interrupted_runs(tmp_path: Path) -> None:
    old = store.begin_run(tmp_path, FP)
    store.commit_part(cands(PLANNED[:2], 2), tmp_path, epoch=old)
    new = store.begin_run(tmp_path, FP)
    pending = [k for k in PLANNED if k not in store.done_keys(tmp_path)]
    land_unfenced(tmp_path, PLANNED[2:5], old)  # lands after the resumed run planned its work ...
    store.commit_part(cands(pending[:2], 2), tmp_path, epoch=new)  # ... which dies before it validates
    assert run(tmp_path, PLANNED) == {"queries": 8, "candidates": 16, "errored": 0}  # no --overwrite
    assert_exactly_once(tmp_path, PLANNED)


def test_a_directory_stuck_by_the_old_race_completes_on_rerun(tmp_path: Path) -> None:
    """Before epochs were in part names, the race left two `part-<hash>` files holding one query, and every
    rerun failed with ExactlyOnceError until `--overwrite` (all pools lost) or deleting files by hand."""
    store.begin_run(tmp_path, FP)
    for keys in (PLANNED[:3], PLANNED[2:5]):  # 'u1'/'c' twice
        pq.write_table(cands(keys, 2).cast(CANDIDATES), tmp_path / store.part_name(keys, 0).replace("e000000-", ""))
    assert [store.part_epoch(p) for p in store.part_paths(tmp_path)] == [0, 0]
    with pytest.raises(ExactlyOnceError, match="in two parts"):
        store.validate_output(tmp_path, PLANNED, [], 2)
    assert run(tmp_path, PLANNED) == {"queries": 8, "candidates": 16, "errored": 0}
    assert_exactly_once(tmp_path, PLANNED)


def test_a_crash_between_a_parts_write_and_its_rename_is_cleaned_up_by_the_rerun(tmp_path: Path) -> None:
    epoch = store.begin_run(tmp_path, FP)
    store.commit_part(cands(PLANNED[:3], 2), tmp_path, epoch=epoch)
    whole = store._write_parquet_tmp(cands(PLANNED[3:5], 2).cast(CANDIDATES),
                                     tmp_path / store.part_name(PLANNED[3:5], epoch))  # written, fsynced, killed
    half = tmp_path / f".{store.part_name(PLANNED[5:], epoch)}.4242.deadbeef.tmp"
    half.write_bytes(whole.read_bytes()[:100])  # killed mid-write
    (tmp_path / "._manifest.json.4242.cafe.tmp").write_text('{"epo')  # a manifest write cut short
    assert store.done_keys(tmp_path) == set(PLANNED[:3])
    assert run(tmp_path, PLANNED) == {"queries": 8, "candidates": 16, "errored": 0}
    assert_exactly_once(tmp_path, PLANNED)


def test_parts_are_fsynced_before_the_rename_and_the_directory_after_it(tmp_path: Path, monkeypatch) -> None:
    epoch = store.begin_run(tmp_path, FP)
    events: list[tuple[str, ...]] = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}"))),
                                                 real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append(("replace", str(a), str(b))), real_replace(a, b))[1])
    final = store.commit_part(cands(PLANNED[:2], 2), tmp_path, epoch=epoch)
    (rename,) = [e for e in events if e[0] == "replace"]
    i = events.index(rename)
    assert ("fsync", rename[1]) in events[:i], "the part's data must be on disk before it gets its name"
    assert rename[2] == str(final) and ("fsync", str(tmp_path)) in events[i + 1:], "the rename must be durable"


def test_parts_stored_twice_by_one_run_fail_validation_and_the_rerun_keeps_one(tmp_path: Path) -> None:
    epoch = store.begin_run(tmp_path, FP)
    store.commit_part(cands(PLANNED[:2], 2), tmp_path, epoch=epoch)
    store.commit_part(cands(PLANNED[1:], 2), tmp_path, epoch=epoch)  # a bug, not a race: reported ...
    with pytest.raises(ExactlyOnceError, match=r"in two parts(.|\n)*A rerun \(no --overwrite needed\)"):
        store.validate_output(tmp_path, PLANNED, [], 2)
    assert run(tmp_path, PLANNED) == {"queries": 8, "candidates": 16, "errored": 0}  # ... and settled by a rerun
    assert_exactly_once(tmp_path, PLANNED)


def test_an_unreadable_part_is_moved_aside_and_regenerated(tmp_path: Path) -> None:
    epoch = store.begin_run(tmp_path, FP)
    store.commit_part(cands(PLANNED[:3], 2), tmp_path, epoch=epoch)
    lost = tmp_path / store.part_name(PLANNED[3:6], epoch)
    lost.write_bytes(b"")  # renamed but never fsynced by an older version, then the machine lost power
    with pytest.raises(DataError, match="a rerun moves it aside"):
        store.done_keys(tmp_path)
    assert run(tmp_path, PLANNED) == {"queries": 8, "candidates": 16, "errored": 0}
    assert (tmp_path / f".{lost.name}.corrupt").is_file()
    assert_exactly_once(tmp_path, PLANNED)


def test_overwrite_never_reuses_an_epoch(tmp_path: Path) -> None:
    old = store.begin_run(tmp_path, FP)
    store.commit_part(cands(PLANNED[:2], 2), tmp_path, epoch=old)
    new = store.begin_run(tmp_path, {**FP, "n": 3}, overwrite=True)
    assert new > old and store.part_paths(tmp_path) == [] and (tmp_path / store.LOCK_FILE).is_file()
    with pytest.raises(StaleRunError):  # an actor of the discarded run cannot write into the new one
        store.commit_part(cands(PLANNED[:2], 2), tmp_path, epoch=old)


def test_part_names_carry_the_epoch(tmp_path: Path) -> None:
    name = store.part_name([("u1", "a"), ("u1", "b")], 7)
    assert name == store.part_name([("u1", "b"), ("u1", "a"), ("u1", "a")], 7) != store.part_name([("u1", "a")], 7)
    assert store.part_epoch(name) == 7 and store.part_epoch(tmp_path / name) == 7
    assert store.part_epoch("part-0123456789abcdef01234567.parquet") == 0  # written before epochs were in names


def test_a_hung_lock_holder_gives_an_error_not_a_hang(tmp_path: Path) -> None:
    with store._locked(tmp_path), pytest.raises(TimeoutError, match="still locked"), \
            store._locked(tmp_path, timeout_s=0.2):
        pass
