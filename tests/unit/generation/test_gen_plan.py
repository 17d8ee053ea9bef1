"""Work planning: eval = the test queries; rm_train = each user's latest profile items, leave-one-out."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ttp_ray.errors import DataError
from ttp_ray.generation import plan


def test_eval_work_is_the_queries(commit_run_dir: Path) -> None:
    queries = pq.read_table(commit_run_dir / "data/commits/queries.parquet")
    work = pa.Table.from_batches(list(plan.iter_work("eval", commit_run_dir / "data/commits")))
    assert work.num_rows == queries.num_rows == 9
    assert work["query_id"].to_pylist() == queries["query_id"].to_pylist()
    assert work["exclude_item_id"].null_count == 9


def test_rm_train_replays_the_latest_profile_items(commit_run_dir: Path) -> None:
    data = commit_run_dir / "data/commits"
    profile = pq.read_table(data / "profile.parquet").to_pylist()
    work = pa.Table.from_batches(list(plan.iter_work("rm_train", data, items_per_user=3))).to_pylist()
    users = {r["user_id"] for r in profile}
    assert len(work) == 3 * len(users)
    for user in users:
        items = sorted((r for r in profile if r["user_id"] == user), key=lambda r: r["position"])
        latest = {r["item_id"]: r for r in items[-3:]}
        mine = [w for w in work if w["user_id"] == user]
        assert {w["query_id"] for w in mine} == set(latest)
        for w in mine:
            item = latest[w["query_id"]]
            assert w["exclude_item_id"] == w["query_id"]  # never retrieves itself
            assert w["query_text"] == item["input"] and w["reference"] == item["output"]
            assert w["input"] == "Generate a commit subject line for the following change:\n" + item["input"]
            assert w["task"] == "commit_subject"


def test_pending_skips_done_queries_in_row_groups(commit_run_dir: Path, tmp_path: Path) -> None:
    data = commit_run_dir / "data/commits"
    keys = list(plan.iter_keys("eval", data))
    done = set(keys[:4])
    planned, pending = plan.write_pending("eval", data, done, tmp_path / "p.parquet", row_group_size=2)
    assert (planned, pending) == (9, 5)
    f = pq.ParquetFile(tmp_path / "p.parquet")
    assert f.num_row_groups == 3
    left = f.read()
    assert set(zip(left["user_id"].to_pylist(), left["query_id"].to_pylist(), strict=True)) == set(keys[4:])


def test_missing_data_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="queries.parquet.*run the data stage first"):
        list(plan.iter_work("eval", tmp_path))
