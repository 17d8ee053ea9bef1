"""What to generate: the work items of a mode, streamed, minus what a previous run already stored.

A work item is one query: `eval` takes the dataset's test queries as they are; `rm_train` replays each user's
latest profile items as pseudo-queries (query_id = item_id, reference = the item's real output) that must
not retrieve themselves (`exclude_item_id`).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ttp_ray.data.schema import QUERIES
from ttp_ray.errors import DataError
from ttp_ray.generation.config import Mode
from ttp_ray.policy.prompts import prompt_task

log = logging.getLogger(__name__)

__all__ = ["WORK", "iter_keys", "iter_work", "write_pending"]

# One row per query to generate for (the QUERIES columns plus the leave-one-out item).
WORK = QUERIES.append(pa.field("exclude_item_id", pa.string(), nullable=True))
_READ_ROWS = 65_536


def _require(path: Path) -> Path:
    if not path.is_file():
        raise DataError("not found; run the data stage first (`ttp data`)", file=str(path))
    return path


def iter_work(mode: Mode, data_dir: str | Path, items_per_user: int = 10) -> Iterator[pa.RecordBatch]:
    """Stream the work items of `mode` (WORK schema) from `{data_dir}/{queries,profile}.parquet`."""
    data_dir = Path(data_dir)
    queries = _require(data_dir / "queries.parquet")
    if mode == "eval":
        for batch in pq.ParquetFile(queries).iter_batches(batch_size=_READ_ROWS, columns=WORK.names[:-1]):
            yield pa.RecordBatch.from_arrays(
                [*batch.columns, pa.nulls(batch.num_rows, pa.string())], schema=WORK)
        return
    if mode != "rm_train":
        raise ValueError(f"`mode` must be 'eval' or 'rm_train', got {mode!r}")
    yield from _pseudo_queries(data_dir, queries, items_per_user).to_batches(max_chunksize=_READ_ROWS)


def _pseudo_queries(data_dir: Path, queries: Path, k: int) -> pa.Table:
    """Each user's latest `k` profile items with a non-empty input and output, as WORK rows.

    Selecting needs the profile's (user_id, item_id, position) and text lengths in memory: fine for LaMP-scale
    data (~10^6 items); the pseudo-query table itself is `users x k` rows.
    """
    profile = _require(data_dir / "profile.parquet")
    keys = pq.read_table(profile, columns=["user_id", "item_id", "position", "input", "output"])
    usable = pc.and_(pc.greater(pc.utf8_length(keys["input"]), 0), pc.greater(pc.utf8_length(keys["output"]), 0))
    keys = keys.filter(usable).drop_columns(["input", "output"])
    if keys.num_rows < pq.ParquetFile(profile).metadata.num_rows:
        log.info("rm_train: profile items without an input or output are not usable as pseudo-queries")
    df = keys.to_pandas().sort_values(["user_id", "position"], kind="stable")
    chosen = df.groupby("user_id", sort=False).tail(k)
    items = pq.read_table(profile, columns=["user_id", "item_id", "input", "output"],
                          filters=[("item_id", "in", chosen["item_id"].tolist())]) if len(chosen) else None
    q = pq.read_table(queries, columns=["user_id", "task", "input", "query_text"])
    user_task, user_prefix = _user_phrasing(q)
    default_task = Counter(q["task"].to_pylist()).most_common(1)[0][0] if q.num_rows else "generic"
    rows = []
    wanted = set(zip(chosen["user_id"], chosen["item_id"], strict=True))
    if items is not None:
        for user_id, item_id, text, output in zip(*(items[c].to_pylist() for c in items.column_names), strict=True):
            if (user_id, item_id) not in wanted:
                continue  # the same item id in another user's profile
            wanted.discard((user_id, item_id))
            task = user_task.get(user_id, default_task)
            prefix = user_prefix.get(user_id)
            full = prefix + text if prefix is not None else prompt_task(task).instruction.format(text=text)
            rows.append({"user_id": user_id, "query_id": item_id, "task": task, "input": full, "query_text": text,
                         "reference": output, "exclude_item_id": item_id})
    rows.sort(key=lambda r: (r["user_id"], r["query_id"]))
    return pa.Table.from_pylist(rows, schema=WORK)


def _user_phrasing(q: pa.Table) -> tuple[dict[str, str], dict[str, str]]:
    """Per user: the task of their queries, and the instruction prefix of the released input (input minus text)."""
    task, prefix = {}, {}
    for user_id, t, full, text in zip(*(q[c].to_pylist() for c in ("user_id", "task", "input", "query_text")),
                                      strict=True):
        task.setdefault(user_id, t)
        if user_id not in prefix and text and full.endswith(text):
            prefix[user_id] = full[: len(full) - len(text)]
    return task, prefix


def write_pending(
    mode: Mode,
    data_dir: str | Path,
    done: set[tuple[str, str]],
    out_path: str | Path,
    items_per_user: int = 10,
    *,
    row_group_size: int = 8,
) -> tuple[int, int]:
    """Write the work items not in `done` to `out_path`, `row_group_size` rows per row group (the pipeline's
    unit of work); returns (planned, pending) counts."""
    planned = pending = 0
    out_path = Path(out_path)
    buffer: list[pa.RecordBatch] = []
    buffered = 0
    with pq.ParquetWriter(out_path, WORK) as writer:
        for batch in iter_work(mode, data_dir, items_per_user):
            planned += batch.num_rows
            if done:
                keep = [(u, q) not in done for u, q in zip(batch["user_id"].to_pylist(),
                                                            batch["query_id"].to_pylist(), strict=True)]
                batch = batch.filter(pa.array(keep, pa.bool_()))
            pending += batch.num_rows
            buffer.append(batch)
            buffered += batch.num_rows
            if buffered >= _READ_ROWS:
                writer.write_table(pa.Table.from_batches(buffer, WORK), row_group_size=row_group_size)
                buffer, buffered = [], 0
        if buffered:
            writer.write_table(pa.Table.from_batches(buffer, WORK), row_group_size=row_group_size)
    return planned, pending


def iter_keys(mode: Mode, data_dir: str | Path, items_per_user: int = 10) -> Iterator[tuple[str, str]]:
    """(user_id, query_id) of every work item of `mode`."""
    for batch in iter_work(mode, data_dir, items_per_user):
        yield from zip(batch["user_id"].to_pylist(), batch["query_id"].to_pylist(), strict=True)
