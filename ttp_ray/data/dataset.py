"""`LoadedDataset` (users, profile, queries, errors as Arrow tables) and the builder every loader fills.

Loaders only parse and validate records; `DatasetBuilder` owns the invariants (unique query ids, profile union
by item id, the `max_*` limits) and `ErrorLog` owns the bad-input policy: under `strict` the first `DataError`
is raised, otherwise the record is skipped, logged and kept as a row of the ERRORS table.
"""

from __future__ import annotations

import json
import logging
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa

from ttp_ray.data.io import read_table, write_table
from ttp_ray.data.schema import ERRORS, PROFILE, QUERIES, SCHEMA_VERSION, USERS
from ttp_ray.errors import DataError

log = logging.getLogger(__name__)

__all__ = ["DatasetBuilder", "ErrorLog", "LoadedDataset"]

_TABLES = {"users": USERS, "profile": PROFILE, "queries": QUERIES, "errors": ERRORS}
_LOGGED_ERRORS = 20  # log the first few bad records individually, then only the total


class ErrorLog:
    """Collects bad records of one load; `strict=True` raises the first one instead."""

    def __init__(self, *, strict: bool, stage: str = "load") -> None:
        self.strict = strict
        self.stage = stage
        self.rows: list[dict[str, Any]] = []

    def report(self, err: DataError) -> None:
        if self.strict:
            raise err
        if len(self.rows) < _LOGGED_ERRORS:
            log.warning("skipped bad record: %s", err)
        self.rows.append(
            {"stage": self.stage, "file": err.file, "record_id": err.record_id, "field": err.field, "reason": err.reason}
        )

    def table(self) -> pa.Table:
        return pa.Table.from_pylist(self.rows, schema=ERRORS)


@dataclass
class _User:
    profile: dict[str, dict[str, Any]] = field(default_factory=dict)  # item_id -> row, in first-seen order
    queries: list[dict[str, Any]] = field(default_factory=list)


class DatasetBuilder:
    """Accumulates users, profile items and queries, then applies the limits and emits the tables."""

    def __init__(self, name: str, task: str, errors: ErrorLog) -> None:
        self.name = name
        self.task = task
        self.errors = errors
        self._users: dict[str, _User] = {}
        self._query_ids: set[str] = set()

    def has_query(self, query_id: str) -> bool:
        return query_id in self._query_ids

    @property
    def query_ids(self) -> frozenset[str]:
        return frozenset(self._query_ids)

    def add_query(self, user_id: str, query_id: str, input: str, query_text: str, reference: str | None) -> None:
        """Add a test query (the caller checked `has_query` first and reported a duplicate)."""
        self._query_ids.add(query_id)
        self._users.setdefault(user_id, _User()).queries.append(
            {"user_id": user_id, "query_id": query_id, "task": self.task, "input": input,
             "query_text": query_text, "reference": reference}
        )

    def add_profile_item(
        self, user_id: str, item_id: str, input: str, output: str, date: str | None, *, file: str, record_id: str
    ) -> None:
        """Add a profile item; a repeat with the same id (time split) is merged, a conflicting one reported."""
        profile = self._users.setdefault(user_id, _User()).profile
        old = profile.get(item_id)
        if old is None:
            profile[item_id] = {"user_id": user_id, "item_id": item_id, "input": input, "output": output,
                                "date": date, "position": len(profile)}
        elif (old["input"], old["output"]) != (input, output):
            self.errors.report(DataError(
                f"profile item {item_id!r} of user {user_id!r} repeats with different content; kept the first",
                file=file, record_id=record_id, field="profile"))

    def build(
        self,
        *,
        max_users: int | None = None,
        max_queries_per_user: int | None = None,
        max_profile_items: int | None = None,
    ) -> LoadedDataset:
        """Emit the tables. Users without a valid query are dropped (they cannot be evaluated)."""
        users = {u: acc for u, acc in self._users.items() if acc.queries}
        if max_users is not None and len(users) > max_users:
            # OPPU-style: the users with the longest histories (ties: first seen), kept in first-seen order.
            ranked = sorted(enumerate(users), key=lambda p: (-len(users[p[1]].profile), p[0]))
            keep = {u for _, u in ranked[:max_users]}
            users = {u: acc for u, acc in users.items() if u in keep}
        user_rows, profile_rows, query_rows = [], [], []
        for user_id, acc in users.items():
            items = list(acc.profile.values())
            if max_profile_items is not None:
                items = items[-max_profile_items:]  # the latest ones (profiles are oldest first)
            queries = acc.queries if max_queries_per_user is None else acc.queries[:max_queries_per_user]
            user_rows.append({"user_id": user_id, "n_profile": len(items), "n_queries": len(queries),
                              "dataset": self.name})
            profile_rows += items
            query_rows += queries
        return LoadedDataset(
            name=self.name,
            task=self.task,
            users=pa.Table.from_pylist(user_rows, schema=USERS),
            profile=pa.Table.from_pylist(profile_rows, schema=PROFILE),
            queries=pa.Table.from_pylist(query_rows, schema=QUERIES),
            errors=self.errors.table(),
        )


@dataclass
class LoadedDataset:
    """One dataset in the project's schemas: USERS, PROFILE, QUERIES and the ERRORS of loading it."""

    name: str
    task: str
    users: pa.Table
    profile: pa.Table
    queries: pa.Table
    errors: pa.Table

    def write(self, out_dir: str | Path) -> Path:
        """Write `{users,profile,queries,errors}.parquet` and `summary.json` under `out_dir`."""
        out = Path(out_dir)
        for key, schema in _TABLES.items():
            write_table(getattr(self, key), out / f"{key}.parquet", schema)
        (out / "summary.json").write_text(json.dumps(self.summary(), indent=1) + "\n")
        return out

    @classmethod
    def read(cls, in_dir: str | Path) -> LoadedDataset:
        """Read what `write` wrote."""
        d = Path(in_dir)
        summary_path = d / "summary.json"
        if not summary_path.is_file():
            raise DataError("summary.json not found (not a LoadedDataset.write folder?)", file=str(summary_path))
        summary = json.loads(summary_path.read_text())
        tables = {key: read_table(d / f"{key}.parquet", schema) for key, schema in _TABLES.items()}
        return cls(name=summary["name"], task=summary["task"], **tables)

    def summary(self) -> dict[str, Any]:
        """Counts worth printing and checking: users, profile items, queries, references, errors."""
        n_profile = self.users.column("n_profile").to_pylist()
        refs = self.queries.column("reference")
        return {
            "name": self.name,
            "task": self.task,
            "schema_version": SCHEMA_VERSION,
            "n_users": self.users.num_rows,
            "n_profile_items": self.profile.num_rows,
            "n_queries": self.queries.num_rows,
            "n_queries_with_reference": self.queries.num_rows - refs.null_count,
            "n_errors": self.errors.num_rows,
            "profile_per_user": {
                "min": min(n_profile, default=0),
                "median": statistics.median(n_profile) if n_profile else 0,
                "max": max(n_profile, default=0),
            },
        }

    def references(self, mode: Literal["eval", "rm_train"] = "eval") -> dict[tuple[str, str], str | None]:
        """`(user_id, query_id) -> reference` for `score_candidates`; rm_train pools use profile outputs."""
        if mode == "eval":
            t = self.queries
            return dict(zip(zip(t["user_id"].to_pylist(), t["query_id"].to_pylist(), strict=True),
                            t["reference"].to_pylist(), strict=True))
        if mode == "rm_train":
            t = self.profile
            return dict(zip(zip(t["user_id"].to_pylist(), t["item_id"].to_pylist(), strict=True),
                            t["output"].to_pylist(), strict=True))
        raise ValueError(f"`mode` must be 'eval' or 'rm_train', got {mode!r}")
