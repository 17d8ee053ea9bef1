"""`LoadedDataset` (users, profile, queries, errors as Arrow tables) and the builder every loader fills.

Loaders only parse and validate records; `DatasetBuilder` owns the invariants (unique query ids, profile union
by item id, the `max_*` limits, at least one valid query, the `max_error_rate`) and `ErrorLog` owns the
bad-input policy: under `strict` the first `DataError` is raised, otherwise the record is skipped, logged and
kept as a row of the ERRORS table.
"""

from __future__ import annotations

import json
import logging
import re
import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa

from ttp_ray.data.io import read_table, write_table
from ttp_ray.data.schema import ERRORS, PROFILE, QUERIES, SCHEMA_VERSION, USERS
from ttp_ray.errors import DataError, TTPValidationError

log = logging.getLogger(__name__)

__all__ = ["DatasetBuilder", "ErrorLog", "LoadedDataset", "RejectedLoadError"]

_TABLES = {"users": USERS, "profile": PROFILE, "queries": QUERIES, "errors": ERRORS}
_LOGGED_ERRORS = 20  # log the first few bad records individually, then only the total


Rejects = Literal["record", "item"]


class RejectedLoadError(DataError):
    """A load that must not succeed: no valid query, or more rejected records than `max_error_rate` allows.

    `errors` holds the ERRORS table of what was rejected, so the caller can still write it for inspection.
    """

    def __init__(self, reason: str, *, file: str, field: str | None, errors: pa.Table) -> None:
        super().__init__(reason, file=file, field=field)
        self.errors = errors


class ErrorLog:
    """Collects bad records of one load; `strict=True` raises the first one instead.

    `report(err, rejects=...)` says what the error costs: a whole record (question/row), one profile item, or
    nothing that counts against `max_error_rate` (a gold entry).
    """

    def __init__(self, *, strict: bool, stage: str = "load") -> None:
        self.strict = strict
        self.stage = stage
        self.rows: list[dict[str, Any]] = []
        self._rejects: list[Rejects | None] = []  # per row

    def report(self, err: DataError, *, rejects: Rejects | None = None) -> None:
        if self.strict:
            raise err
        if len(self.rows) < _LOGGED_ERRORS:
            log.warning("skipped bad record: %s", err)
        self.rows.append(
            {"stage": self.stage, "file": err.file, "record_id": err.record_id, "field": err.field, "reason": err.reason}
        )
        self._rejects.append(rejects)

    def rejected(self, kind: Rejects) -> int:
        """How many records (`"record"`) or profile items (`"item"`) were rejected."""
        return self._rejects.count(kind)

    def commonest_field(self, kind: Rejects) -> tuple[str | None, int]:
        """The field most often at fault among rejections of `kind` (list indices as `[*]`), and its count."""
        fields = Counter(None if r["field"] is None else re.sub(r"\[\d+\]", "[*]", r["field"])
                         for r, k in zip(self.rows, self._rejects, strict=True) if k == kind)
        return fields.most_common(1)[0] if fields else (None, 0)

    def table(self) -> pa.Table:
        return pa.Table.from_pylist(self.rows, schema=ERRORS)


def _blame(field: str | None, count: int) -> str:
    """How many rejections the commonest cause (`field`, named by the error itself) accounts for."""
    return f"{count} for this field" if field is not None else f"{count} not a readable object"


@dataclass
class _User:
    profile: dict[str, dict[str, Any]] = field(default_factory=dict)  # item_id -> row, in first-seen order
    queries: list[dict[str, Any]] = field(default_factory=list)


class DatasetBuilder:
    """Accumulates users, profile items and queries, then applies the limits and emits the tables."""

    def __init__(self, name: str, task: str, errors: ErrorLog, *, file: str = "") -> None:
        self.name = name
        self.task = task
        self.errors = errors
        self.file = file  # the input file, named when the load as a whole is rejected
        self._users: dict[str, _User] = {}
        self._query_ids: set[str] = set()
        self._items_ok = 0  # profile items accepted (a repeat merged by id counts)

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
        self, user_id: str, item_id: str, input: str, output: str, date: str | None, *, file: str, record_id: str,
        field: str = "profile",
    ) -> None:
        """Add a profile item; a repeat with the same id (time split) is merged, a conflicting one reported
        (as `field`, the item's place in its record, e.g. `profile[2]`)."""
        profile = self._users.setdefault(user_id, _User()).profile
        old = profile.get(item_id)
        if old is None:
            profile[item_id] = {"user_id": user_id, "item_id": item_id, "input": input, "output": output,
                                "date": date, "position": len(profile)}
        elif (old["input"], old["output"]) != (input, output):
            self.errors.report(DataError(
                f"profile item {item_id!r} of user {user_id!r} repeats with different content; kept the first",
                file=file, record_id=record_id, field=field), rejects="item")
            return
        self._items_ok += 1

    def check_rejections(self, max_error_rate: float | None) -> None:
        """Raise `RejectedLoadError` when no query is valid, or when the share of rejected records or of rejected
        profile items is above `max_error_rate` (None: no limit)."""
        if max_error_rate is not None and not 0 <= max_error_rate <= 1:
            raise TTPValidationError(f"`max_error_rate` must be in [0, 1], got {max_error_rate}",
                                     parameter="max_error_rate", value=max_error_rate)
        n_ok, n_bad = len(self._query_ids), self.errors.rejected("record")
        if n_ok == 0:
            field, count = self.errors.commonest_field("record")
            if n_bad == 0:
                reason = "no valid query: the input holds no records"
            else:
                reason = f"no valid query: all {n_bad} record(s) were rejected, {_blame(field, count)}"
            raise RejectedLoadError(reason, file=self.file, field=field, errors=self.errors.table())
        if max_error_rate is None:
            return
        shares: tuple[tuple[Rejects, str, int], ...] = (("record", "records", n_ok),
                                                         ("item", "profile items", self._items_ok))
        for kind, what, ok in shares:
            bad = self.errors.rejected(kind)
            if bad and bad / (ok + bad) > max_error_rate:
                field, count = self.errors.commonest_field(kind)
                raise RejectedLoadError(
                    f"{bad} of {ok + bad} {what} rejected ({bad / (ok + bad):.1%} > max_error_rate "
                    f"{max_error_rate:.1%}), {_blame(field, count)}; fix the input or raise `max_error_rate`",
                    file=self.file, field=field, errors=self.errors.table())

    def build(
        self,
        *,
        max_error_rate: float | None = None,
        max_users: int | None = None,
        max_queries_per_user: int | None = None,
        max_profile_items: int | None = None,
    ) -> LoadedDataset:
        """Emit the tables. Users without a valid query are dropped (they cannot be evaluated).

        Raises:
            RejectedLoadError: see `check_rejections` (checked before the `max_*` limits apply).
        """
        self.check_rejections(max_error_rate)
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
