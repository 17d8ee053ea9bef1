"""Exactly-once storage of candidate pools: atomic part files, a fenced manifest, resume and validation.

Layout of `{run_dir}/candidates/{dataset}/{mode}/`:

* `part-<hash>.parquet` — CANDIDATES rows of complete queries (all `n` candidates of a query live in one part).
  A part is written to a hidden temp file and renamed into place, so it either exists whole or not at all;
  its name hashes the (user_id, query_id) keys it holds, so a Ray retry of the same batch rewrites the same
  file instead of adding a duplicate.
* `errors.parquet` — ERRORS rows of the queries that failed in the latest run (they are retried on rerun).
* `_manifest.json` — what the parts were generated with (a fingerprint of the output-affecting config) and
  the run `epoch`. Every run bumps the epoch and every commit checks it, so actors of a killed run that are
  still finishing a batch cannot add parts behind the back of the run that resumed.

Names starting with `_` or `.` are skipped by Parquet dataset readers; read the pools with `read_candidates`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ttp_ray.data.schema import CANDIDATES, ERRORS, conform
from ttp_ray.errors import DataError, TTPValidationError

__all__ = [
    "ExactlyOnceError",
    "StaleRunError",
    "begin_run",
    "commit_part",
    "done_keys",
    "part_paths",
    "read_candidates",
    "validate_output",
    "write_errors",
]

MANIFEST = "_manifest.json"
ERRORS_FILE = "errors.parquet"
PART_PREFIX = "part-"

Key = tuple[str, str]  # (user_id, query_id)


class ExactlyOnceError(RuntimeError):
    """The stored pools are not exactly one row per (user_id, query_id, cand_idx) of the planned queries."""


class StaleRunError(RuntimeError):
    """A newer run owns this output directory; a leftover actor of an older run must not commit."""


def part_paths(out_dir: str | Path) -> list[Path]:
    """Committed part files, sorted by name."""
    d = Path(out_dir)
    return sorted(d.glob(f"{PART_PREFIX}*.parquet")) if d.is_dir() else []


def read_candidates(out_dir: str | Path, columns: Sequence[str] | None = None) -> pa.Table:
    """All committed candidates of one pool directory as one CANDIDATES table."""
    parts = [pq.read_table(p, columns=list(columns) if columns else None) for p in part_paths(out_dir)]
    if not parts:
        empty = CANDIDATES.empty_table()
        return empty.select(list(columns)) if columns else empty
    return pa.concat_tables(parts)


def part_name(keys: Iterable[Key]) -> str:
    """Deterministic name of the part holding exactly these queries."""
    h = hashlib.blake2b(digest_size=12)
    for user_id, query_id in sorted(set(keys)):
        h.update(f"{len(user_id)}:{user_id}{len(query_id)}:{query_id}".encode())
    return f"{PART_PREFIX}{h.hexdigest()}.parquet"


def _read_manifest(out_dir: Path) -> dict[str, Any] | None:
    path = out_dir / MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DataError(f"corrupt manifest: {e}", file=str(path)) from None


def _write_json_atomic(path: Path, obj: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)


def begin_run(out_dir: str | Path, fingerprint: dict[str, Any], *, overwrite: bool = False) -> int:
    """Claim `out_dir` for a new run and return its epoch.

    Raises:
        TTPValidationError: the directory holds pools generated with different settings (and not `overwrite`).
    """
    d = Path(out_dir)
    if overwrite and d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True, exist_ok=True)
    for tmp in d.glob(".*.tmp"):  # leftovers of a run killed mid-write; never renamed, never counted
        tmp.unlink(missing_ok=True)
    manifest = _read_manifest(d)
    if manifest is not None and manifest.get("fingerprint") != fingerprint:
        old = manifest.get("fingerprint", {})
        changed = sorted(k for k in set(old) | set(fingerprint) if old.get(k) != fingerprint.get(k))
        raise TTPValidationError(
            f"{d} holds candidates generated with other settings (changed: {changed}); use another run_dir, "
            "or overwrite=True (`--overwrite`) to discard them", parameter=changed[0] if changed else None)
    epoch = (manifest or {}).get("epoch", 0) + 1
    _write_json_atomic(d / MANIFEST, {"fingerprint": fingerprint, "epoch": epoch})
    return epoch


def current_epoch(out_dir: str | Path) -> int | None:
    manifest = _read_manifest(Path(out_dir))
    return None if manifest is None else int(manifest["epoch"])


def commit_part(table: pa.Table, out_dir: str | Path, *, epoch: int) -> Path:
    """Atomically add a part of complete queries (temp file + rename), fenced by the run epoch.

    Raises:
        StaleRunError: a newer run has claimed the directory since this run began.
    """
    d = Path(out_dir)
    table = conform(table, CANDIDATES)
    keys = zip(table["user_id"].to_pylist(), table["query_id"].to_pylist(), strict=True)
    final = d / part_name(keys)
    tmp = d / f".{final.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    pq.write_table(table, tmp)
    now = current_epoch(d)
    if now != epoch:
        tmp.unlink(missing_ok=True)
        raise StaleRunError(f"{d} is owned by run epoch {now}, this actor belongs to epoch {epoch}")
    os.replace(tmp, final)
    return final


def _part_keys(path: Path) -> pa.Table:
    try:
        t = pq.read_table(path, columns=["user_id", "query_id", "cand_idx"])
    except Exception as e:  # an unreadable part can only come from outside this module (renames are atomic)
        raise DataError(f"unreadable candidate part ({e}); delete it to regenerate its queries", file=str(path)) from e
    return t


def done_keys(out_dir: str | Path) -> set[Key]:
    """(user_id, query_id) of every query with a committed part."""
    done: set[Key] = set()
    for path in part_paths(out_dir):
        t = _part_keys(path).group_by(["user_id", "query_id"]).aggregate([])
        done.update(zip(t["user_id"].to_pylist(), t["query_id"].to_pylist(), strict=True))
    return done


def write_errors(out_dir: str | Path, rows: Sequence[dict[str, Any]]) -> Path:
    """Write this run's failed queries (ERRORS; an empty file when none failed)."""
    path = Path(out_dir) / ERRORS_FILE
    table = pa.Table.from_pylist(list(rows), schema=ERRORS)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)
    return path


def validate_output(
    out_dir: str | Path, planned: Iterable[Key], errored: Iterable[Key], n: int, *, max_listed: int = 5
) -> dict[str, int]:
    """Check exactly-once: each planned query is in exactly one part with cand_idx 0..n-1, or it errored.

    Returns counts (`queries`, `candidates`, `errored`); raises `ExactlyOnceError` listing the first offenders.
    """
    problems: list[str] = []
    seen: dict[Key, str] = {}
    n_rows = 0
    for path in part_paths(out_dir):
        t = _part_keys(path)
        n_rows += t.num_rows
        g = t.group_by(["user_id", "query_id"]).aggregate(
            [("cand_idx", "count"), ("cand_idx", "count_distinct"), ("cand_idx", "min"), ("cand_idx", "max")])
        bad = pc.invert(pc.and_(
            pc.and_(pc.equal(g["cand_idx_count"], n), pc.equal(g["cand_idx_count_distinct"], n)),
            pc.and_(pc.equal(g["cand_idx_min"], 0), pc.equal(g["cand_idx_max"], n - 1))))
        for row in g.filter(bad).to_pylist()[:max_listed]:
            problems.append(f"{path.name}: query {row['query_id']!r} of user {row['user_id']!r} has "
                            f"{row['cand_idx_count']} rows / {row['cand_idx_count_distinct']} distinct cand_idx "
                            f"in [{row['cand_idx_min']}, {row['cand_idx_max']}], expected 0..{n - 1}")
        for key in zip(g["user_id"].to_pylist(), g["query_id"].to_pylist(), strict=True):
            if key in seen:
                problems.append(f"query {key[1]!r} of user {key[0]!r} is in two parts: {seen[key]} and {path.name}")
            seen[key] = path.name
    errored_set = set(errored)
    both = errored_set & seen.keys()
    problems += [f"query {k[1]!r} of user {k[0]!r} is both stored and in errors" for k in sorted(both)[:max_listed]]
    missing, planned_count = [], 0
    for key in planned:
        planned_count += 1
        if key not in seen and key not in errored_set:
            missing.append(key)
        seen.pop(key, None)
    problems += [f"query {k[1]!r} of user {k[0]!r} is missing (neither stored nor errored)" for k in missing[:max_listed]]
    problems += [f"query {k[1]!r} of user {k[0]!r} is stored but was not planned" for k in list(seen)[:max_listed]]
    if problems:
        raise ExactlyOnceError(f"{out_dir}: candidate pools violate exactly-once ({len(missing)} missing, "
                               f"{len(seen)} unplanned):\n  " + "\n  ".join(problems))
    return {"queries": planned_count - len(errored_set), "candidates": n_rows, "errored": len(errored_set)}
