"""Exactly-once storage of candidate pools: durable atomic parts, a locked epoch fence, self-healing resume.

Layout of `{run_dir}/candidates/{dataset}/{mode}/`:

* `part-e<epoch>-<hash>.parquet` — CANDIDATES rows of complete queries (all `n` candidates of a query live in
  one part). A part is written to a hidden temp file, fsynced, renamed into place and its directory fsynced,
  so it exists whole or not at all, also after a power cut. `<hash>` hashes the (user_id, query_id) keys it
  holds, so a Ray retry of the same batch rewrites the same file instead of adding a duplicate; `<epoch>` is
  the run that committed it. (Parts named `part-<hash>.parquet`, from before epochs were in the name, count as
  epoch 0.)
* `errors.parquet` — ERRORS rows of the queries that failed in the latest run (they are retried on rerun).
* `_manifest.json` — what the parts were generated with (a fingerprint of the output-affecting config) and
  the current run `epoch`.
* `_manifest.lock` — an advisory lock (`flock`) serialising the epoch bump and every commit.

Exactly once, also with leftover actors of a killed run still finishing a batch:

1. Every run bumps the epoch under the lock; every commit checks the epoch *and* renames under the same lock.
   A commit that passed the check therefore lands before the bump, and the resumed run sees it as done; one
   that comes after the bump gets `StaleRunError` and leaves nothing behind. (The lock belongs to the open
   file: a killed holder releases it.)
2. Where the fence did not hold — a filesystem without working `flock`, or parts written before it existed —
   the store settles by itself: when two parts hold the same query, the part of the newer epoch wins and the
   older part is deleted (`begin_run` and `validate_output`, under the lock; `read_candidates` skips it).
   Queries of a deleted part that no other part holds are generated again by the next run.
3. `begin_run` also removes temp files of interrupted writes, moves unreadable parts aside (`.<name>.corrupt`)
   and keeps one copy of queries stored twice by the same run, so a rerun after any interruption completes
   without `--overwrite`.

Names starting with `_` or `.` are skipped by Parquet dataset readers; read the pools with `read_candidates`.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ttp_ray.data.schema import CANDIDATES, ERRORS, conform
from ttp_ray.durable import fsync_dir, fsync_file
from ttp_ray.errors import DataError, TTPValidationError

log = logging.getLogger(__name__)

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
LOCK_FILE = "_manifest.lock"
ERRORS_FILE = "errors.parquet"
PART_PREFIX = "part-"
LOCK_TIMEOUT_S = 120.0  # a commit holds the lock for one rename; only a hung holder makes anyone wait this long

_PART_NAME = re.compile(r"^part-(?:e(\d+)-)?[0-9a-f]+\.parquet$")
_unlockable: set[str] = set()  # directories whose filesystem has no flock (warned about once)

Key = tuple[str, str]  # (user_id, query_id)


class ExactlyOnceError(RuntimeError):
    """The stored pools are not exactly one row per (user_id, query_id, cand_idx) of the planned queries."""


class StaleRunError(RuntimeError):
    """A newer run owns this output directory; a leftover actor of an older run must not commit."""


# ------------------------------------------------------------------------------------------------ names
def part_paths(out_dir: str | Path) -> list[Path]:
    """Committed part files (every epoch), sorted by name."""
    d = Path(out_dir)
    return sorted(d.glob(f"{PART_PREFIX}*.parquet")) if d.is_dir() else []


def part_name(keys: Iterable[Key], epoch: int) -> str:
    """Deterministic name of the part of run `epoch` holding exactly these queries."""
    h = hashlib.blake2b(digest_size=12)
    for user_id, query_id in sorted(set(keys)):
        h.update(f"{len(user_id)}:{user_id}{len(query_id)}:{query_id}".encode())
    return f"{PART_PREFIX}e{epoch:06d}-{h.hexdigest()}.parquet"


def part_epoch(path: str | Path) -> int:
    """The epoch of the run that committed this part (0 for parts without one in their name)."""
    m = _PART_NAME.match(Path(path).name)
    return int(m.group(1)) if m and m.group(1) else 0


# ------------------------------------------------------------------------------------------------ durability
def _tmp_path(final: Path) -> Path:
    return final.with_name(f".{final.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


def _replace_durably(tmp: Path, final: Path) -> None:
    """Rename a written and fsynced temp file into place, then fsync the directory so the rename survives."""
    os.replace(tmp, final)
    fsync_dir(final.parent)


def _write_json_atomic(path: Path, obj: dict[str, Any]) -> None:
    tmp = _tmp_path(path)
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True) + "\n")
    fsync_file(tmp)
    _replace_durably(tmp, path)


def _write_parquet_tmp(table: pa.Table, final: Path) -> Path:
    tmp = _tmp_path(final)
    pq.write_table(table, tmp)
    fsync_file(tmp)
    return tmp


@contextmanager
def _locked(d: Path, timeout_s: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """Hold the exclusive lock of `d`'s manifest (polls, so a hung holder gives an error, not a hang)."""
    fd = os.open(d / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{d / LOCK_FILE}: still locked after {timeout_s:.0f} s; another process "
                                       "of a generation run holds it (a hung engine actor?)") from None
                time.sleep(0.05)
            except OSError as e:  # no flock on this filesystem: rely on the settling in begin/validate
                if e.errno not in (errno.ENOLCK, errno.ENOTSUP, errno.ENOSYS):
                    raise
                if str(d) not in _unlockable:
                    _unlockable.add(str(d))
                    log.warning("%s: cannot lock (%s); exactly-once rests on settling duplicates", d, e)
                break
        yield
    finally:
        os.close(fd)  # releases the lock


# ------------------------------------------------------------------------------------------------ manifest
def _read_manifest(out_dir: Path) -> dict[str, Any] | None:
    path = out_dir / MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DataError(f"corrupt manifest: {e}", file=str(path)) from None


def current_epoch(out_dir: str | Path) -> int | None:
    manifest = _read_manifest(Path(out_dir))
    return None if manifest is None else int(manifest["epoch"])


def begin_run(out_dir: str | Path, fingerprint: dict[str, Any], *, overwrite: bool = False) -> int:
    """Claim `out_dir` for a new run and return its epoch; settle what interrupted runs left behind.

    Under the manifest lock: bump the epoch (from then on, actors of older runs cannot commit), delete temp
    files of interrupted writes, move unreadable parts aside and delete parts whose queries a newer (or the
    same) run also stored, so that `done_keys` and the resumed run see exactly-once pools.

    Raises:
        TTPValidationError: the directory holds pools generated with different settings (and not `overwrite`).
    """
    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    with _locked(d):
        try:
            manifest = _read_manifest(d)
        except DataError:
            if not overwrite:
                raise
            manifest = None
        # Never reuse an epoch, not even after `overwrite`: a leftover actor of the discarded run holds one.
        last = max([int((manifest or {}).get("epoch", 0)), *(part_epoch(p) for p in part_paths(d))])
        if overwrite:
            _clear(d)
        elif manifest is not None and manifest.get("fingerprint") != fingerprint:
            old = manifest.get("fingerprint", {})
            changed = sorted(k for k in set(old) | set(fingerprint) if old.get(k) != fingerprint.get(k))
            raise TTPValidationError(
                f"{d} holds candidates generated with other settings (changed: {changed}); use another run_dir, "
                "or overwrite=True (`--overwrite`) to discard them", parameter=changed[0] if changed else None)
        epoch = last + 1
        _write_json_atomic(d / MANIFEST, {"fingerprint": fingerprint, "epoch": epoch})
        for tmp in d.glob(".*.tmp"):  # interrupted writes; never renamed, never counted
            tmp.unlink(missing_ok=True)
        _settle(d, same_epoch=True, quarantine=True)
    return epoch


def _clear(d: Path) -> None:
    for p in d.iterdir():
        if p.name == LOCK_FILE:  # others may be waiting on it; deleting it would split the lock
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()
    fsync_dir(d)


# ------------------------------------------------------------------------------------------------ commit
def commit_part(table: pa.Table, out_dir: str | Path, *, epoch: int) -> Path:
    """Durably and atomically add a part of complete queries, fenced by the run epoch.

    The temp file is written and fsynced without the lock; the epoch check and the rename happen under the
    manifest lock, so `begin_run` of a newer run cannot slip in between them.

    Raises:
        StaleRunError: a newer run has claimed the directory since this run began.
    """
    d = Path(out_dir)
    table = conform(table, CANDIDATES)
    keys = zip(table["user_id"].to_pylist(), table["query_id"].to_pylist(), strict=True)
    final = d / part_name(keys, epoch)
    tmp = _write_parquet_tmp(table, final)
    try:
        with _locked(d):
            now = current_epoch(d)
            if now != epoch:
                raise StaleRunError(f"{d} is owned by run epoch {now}, this actor belongs to epoch {epoch}")
            _replace_durably(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)  # only left if the commit failed
    return final


# ------------------------------------------------------------------------------------------------ read
def _part_keys(path: Path) -> pa.Table:
    try:
        t = pq.read_table(path, columns=["user_id", "query_id", "cand_idx"])
    except Exception as e:  # parts are fsynced before their rename: written elsewhere, or by an older version
        raise DataError(f"unreadable candidate part ({e}); a rerun moves it aside and regenerates its queries",
                        file=str(path)) from e
    return t


def _key_set(t: pa.Table) -> set[Key]:
    g = t.select(["user_id", "query_id"]).group_by(["user_id", "query_id"]).aggregate([])
    return set(zip(g["user_id"].to_pylist(), g["query_id"].to_pylist(), strict=True))


def _superseded(parts: Sequence[tuple[Path, set[Key]]], *, same_epoch: bool) -> list[Path]:
    """Parts that share a query with a part that takes precedence: a newer epoch always does; within one
    epoch (only if `same_epoch`) the part whose name sorts last does."""
    owner: dict[Key, int] = {}  # query -> epoch of the part kept for it
    drop: list[Path] = []
    for path, keys in sorted(parts, key=lambda pk: (part_epoch(pk[0]), pk[0].name), reverse=True):
        epoch = part_epoch(path)
        if any(k in owner and (same_epoch or owner[k] > epoch) for k in keys):
            drop.append(path)
            continue
        for k in keys:
            owner.setdefault(k, epoch)
    return drop


def _settle(d: Path, *, same_epoch: bool, quarantine: bool) -> None:
    """Delete superseded parts and, if `quarantine`, move unreadable ones aside (call under the lock)."""
    parts: list[tuple[Path, set[Key]]] = []
    changed = False
    for path in part_paths(d):
        try:
            parts.append((path, _key_set(_part_keys(path))))
        except DataError as e:
            if not quarantine:
                raise
            aside = path.with_name(f".{path.name}.corrupt")  # kept for inspection; readers skip dot files
            os.replace(path, aside)
            changed = True
            log.warning("%s; moved to %s, its queries are generated again", e, aside.name)
    for path in _superseded(parts, same_epoch=same_epoch):
        path.unlink()
        changed = True
        log.warning("%s: deleted %s, whose queries a %s part also holds (e.g. a leftover actor's late commit)",
                    d, path.name, "newer or same-run" if same_epoch else "newer run's")
    if changed:
        fsync_dir(d)


def read_candidates(out_dir: str | Path, columns: Sequence[str] | None = None) -> pa.Table:
    """All committed candidates of one pool directory as one CANDIDATES table.

    A part whose queries a newer run's part also holds (a leftover actor's late commit, not yet settled) is
    skipped, so every (user_id, query_id, cand_idx) appears once.
    """
    read = list(dict.fromkeys([*columns, "user_id", "query_id"])) if columns else None
    tables = {p: pq.read_table(p, columns=read) for p in part_paths(out_dir)}
    skip = set(_superseded([(p, _key_set(t)) for p, t in tables.items()], same_epoch=False))
    parts = [t.select(list(columns)) if columns else t for p, t in tables.items() if p not in skip]
    if not parts:
        empty = CANDIDATES.empty_table()
        return empty.select(list(columns)) if columns else empty
    return pa.concat_tables(parts)


def done_keys(out_dir: str | Path) -> set[Key]:
    """(user_id, query_id) of every query with a committed part."""
    done: set[Key] = set()
    for path in part_paths(out_dir):
        done |= _key_set(_part_keys(path))
    return done


def write_errors(out_dir: str | Path, rows: Sequence[dict[str, Any]]) -> Path:
    """Write this run's failed queries (ERRORS; an empty file when none failed)."""
    path = Path(out_dir) / ERRORS_FILE
    table = pa.Table.from_pylist(list(rows), schema=ERRORS)
    _replace_durably(_write_parquet_tmp(table, path), path)
    return path


def validate_output(
    out_dir: str | Path, planned: Iterable[Key], errored: Iterable[Key], n: int, *, max_listed: int = 5
) -> dict[str, int]:
    """Settle, then check exactly-once: each planned query is in exactly one part with cand_idx 0..n-1, or it
    errored.

    Settling deletes, under the manifest lock, the parts whose queries a newer run's part also holds: the late
    commit of a leftover actor of an older run. Two parts of the same run holding one query stay an error here
    (a bug, not a race); the next `begin_run` keeps one of them.

    Returns counts (`queries`, `candidates`, `errored`); raises `ExactlyOnceError` listing the first offenders.
    """
    d = Path(out_dir)
    if d.is_dir():
        with _locked(d):
            _settle(d, same_epoch=False, quarantine=False)
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
        rerun = any(" is in two parts" in p or " is missing " in p or " both stored and " in p for p in problems)
        raise ExactlyOnceError(f"{out_dir}: candidate pools violate exactly-once ({len(missing)} missing, "
                               f"{len(seen)} unplanned):\n  " + "\n  ".join(problems)
                               + ("\nA rerun (no --overwrite needed) keeps one part per query stored twice and "
                                  "generates missing queries again." if rerun else ""))
    return {"queries": planned_count - len(errored_set), "candidates": n_rows, "errored": len(errored_set)}
