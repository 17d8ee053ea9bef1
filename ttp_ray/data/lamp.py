"""LaMP questions/outputs JSON -> `LoadedDataset` (tasks LaMP-4, 5, 7, commit_subject, synthetic_headline).

Questions file: a JSON list of `{"id", "input", "profile": [...]}`, plus `"user_id"` in the time-based split.
Outputs file: `{"task": "LaMP_4", "golds": [{"id", "output"}]}`. Without `user_id` every question is its own
user (`"q:<id>"`, LaMP's user split); with it, a user's questions are grouped and their repeated profiles are
merged by item id (first occurrence wins, so positions follow the oldest-first order of the source). Ids,
dates and text follow the rules of `data/_fields.py`, shared with the LongLaMP loader.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ttp_ray.data._fields import as_id, check_date, check_field, check_id, has_value
from ttp_ray.data.config import MAX_ERROR_RATE
from ttp_ray.data.dataset import DatasetBuilder, ErrorLog, LoadedDataset
from ttp_ray.data.io import read_json
from ttp_ray.errors import DataError, TTPValidationError

log = logging.getLogger(__name__)

__all__ = ["TASKS", "TaskSpec", "extract_query_text", "load_lamp", "read_outputs", "resolve_task"]


@dataclass(frozen=True)
class TaskSpec:
    """How to read one task: profile item fields and where the query text starts in `input`."""

    name: str
    profile_input: str | None  # profile item key playing the query's role (None: the task has no pairs)
    profile_output: str  # profile item key holding the user's output
    query_marker: str | None  # query text = after this marker; None = after the first ":"; "" = whole input
    input_prefix: str  # how the released inputs start (to infer the task)


TASKS: dict[str, TaskSpec] = {
    s.name: s
    for s in (
        TaskSpec("LaMP_4", "text", "title", "article:", "generate a headline for the following article"),
        TaskSpec("LaMP_5", "abstract", "title", "paper:", "generate a title for the following abstract of a paper"),
        TaskSpec("LaMP_7", None, "text", None, "paraphrase the following tweet"),
        TaskSpec("commit_subject", "text", "title", "change:", "generate a commit subject line for the following change"),
        TaskSpec("synthetic_headline", "text", "title", "article:",
                 "generate a personalized headline for the following article"),
    )
}


def resolve_task(name: str) -> TaskSpec:
    """Find a task by name; `LaMP-4`, `lamp_4` and `LaMP4` all mean `LaMP_4`."""
    m = re.fullmatch(r"lamp[-_ ]?(\d)", name.strip(), flags=re.IGNORECASE)
    key = f"LaMP_{m.group(1)}" if m else name.strip()
    if key not in TASKS:
        raise TTPValidationError(f"unknown task {name!r}; supported: {sorted(TASKS)}", parameter="task", value=name)
    return TASKS[key]


def infer_task(input_text: str) -> TaskSpec | None:
    """The task whose released input prefix `input_text` starts with, if any."""
    head = input_text.lstrip().lower()
    return next((s for s in TASKS.values() if head.startswith(s.input_prefix)), None)


def extract_query_text(input_text: str, marker: str | None) -> str:
    """The retrieval query inside a task input: the text after `marker` (None: after the first ":"), stripped.

    Falls back to the first ":" when the marker is absent, then to the whole input.
    """
    if marker == "":
        return input_text.strip()
    for m in (marker, ":") if marker else (":",):
        pos = input_text.find(m)
        if pos >= 0:
            return input_text[pos + len(m):].strip()
    return input_text.strip()


def read_outputs(path: Path, errors: ErrorLog) -> tuple[str | None, dict[str, str]]:
    """The outputs file's task and `{id: output}`; malformed gold entries are reported."""
    data = read_json(path)
    if isinstance(data, list):  # tolerate a bare list of golds
        data = {"golds": data}
    if not isinstance(data, dict) or not isinstance(data.get("golds"), list):
        raise DataError("outputs file must be {'task': ..., 'golds': [{'id', 'output'}, ...]}", file=str(path), field="golds")
    task = data.get("task")
    file = str(path)
    golds: dict[str, str] = {}
    for i, g in enumerate(data["golds"]):
        try:
            if not isinstance(g, dict):
                raise DataError(f"gold entry must be an object, got {type(g).__name__}", file=file, record_id=f"#{i}")
            gid = check_id(g.get("id"), key="id", file=file, record_id=f"#{i}", field="id")
            out = check_field(g, "output", file=file, record_id=gid)
            if gid in golds and golds[gid] != out:
                raise DataError("duplicate gold id with a different output; kept the first", file=file,
                                record_id=gid, field="id")
        except DataError as e:
            errors.report(e)
            continue
        golds.setdefault(gid, out)
    return (task if isinstance(task, str) else None), golds


def _pick_task(task: str | None, gold_task: str | None, records: list[Any], file: str) -> TaskSpec | None:
    """`task` argument, else the outputs file's task, else inferred from the first input's prefix (None when no
    record has a string `input`: every record is then rejected and the load fails for want of a valid query)."""
    if task is not None:
        spec = resolve_task(task)
        if gold_task is not None and resolve_task(gold_task).name != spec.name:
            log.warning("task override %r differs from the outputs file's task %r; using %r", task, gold_task, spec.name)
        return spec
    if gold_task is not None:
        return resolve_task(gold_task)
    first = next((r.get("input") for r in records if isinstance(r, dict) and isinstance(r.get("input"), str)), None)
    if first is None:
        return None
    spec = infer_task(first)
    if spec is None:
        raise TTPValidationError(
            f"{file}: cannot infer the task from the input {str(first)[:60]!r}; pass `task` (one of {sorted(TASKS)})",
            parameter="task", value=None)
    return spec


def _profile_item(item: Any, spec: TaskSpec, qid: str, j: int, file: str) -> dict[str, Any]:
    """Validate one profile item into PROFILE fields, raising `DataError` naming `profile[j].<field>`."""
    where = f"profile[{j}]"
    if not isinstance(item, dict):
        raise DataError(f"profile item must be an object, got {type(item).__name__}", file=file, record_id=qid, field=where)
    item_id = check_id(item.get("id"), key="id", file=file, record_id=qid, field=f"{where}.id")
    fields = {"output": spec.profile_output, "input": spec.profile_input}
    values: dict[str, str] = {"input": ""}
    for role, key in fields.items():
        if key is not None:
            values[role] = check_field(item, key, file=file, record_id=qid, where=where)
    date = check_date(item.get("date"), file=file, record_id=qid, field=f"{where}.date")
    return {"item_id": item_id, "input": values["input"], "output": values["output"], "date": date}


def user_of(rec: dict[str, Any], qid: str, default: str, *, users_given: bool, file: str) -> str:
    """A record's user: its `user_id`, else `default` (one user per record). When other records of the file
    carry a valid `user_id` (`users_given`), a record without one is an error: a generated user id could
    collide with theirs."""
    if has_value(rec, "user_id"):
        return check_id(rec["user_id"], key="user_id", file=file, record_id=qid, field="user_id")
    if users_given:
        raise DataError("missing 'user_id' while other records have one", file=file, record_id=qid, field="user_id")
    return default


def _question(rec: Any, i: int, file: str, builder: DatasetBuilder,
              users_given: bool) -> tuple[str, str, str, list[Any]]:
    """Validate a question's own fields: `(query_id, input, user_id, profile list)`."""
    if not isinstance(rec, dict):
        raise DataError(f"record must be an object, got {type(rec).__name__}", file=file, record_id=f"#{i}")
    qid = check_id(rec.get("id"), key="id", file=file, record_id=f"#{i}", field="id")
    if builder.has_query(qid):
        raise DataError("duplicate question id; kept the first occurrence", file=file, record_id=qid, field="id")
    text = check_field(rec, "input", file=file, record_id=qid)
    user_id = user_of(rec, qid, f"q:{qid}", users_given=users_given, file=file)
    profile = rec.get("profile")
    if not isinstance(profile, list):
        reason = "missing field 'profile'" if "profile" not in rec else f"'profile' must be a list, got {type(profile).__name__}"
        raise DataError(reason, file=file, record_id=qid, field="profile")
    return qid, text, user_id, profile


def load_lamp(
    questions: str | Path,
    outputs: str | Path | None = None,
    *,
    name: str,
    task: str | None = None,
    strict: bool = False,
    max_error_rate: float | None = MAX_ERROR_RATE,
    max_users: int | None = None,
    max_queries_per_user: int | None = None,
    max_profile_items: int | None = None,
) -> LoadedDataset:
    """Load a LaMP-format questions file (and optional outputs file) into the project's tables.

    Args:
        questions: the questions JSON (a list of records).
        outputs: the outputs JSON; questions without a gold get a null reference.
        name: dataset name (the `dataset` column of USERS).
        task: override the task (else the outputs file's `task`, else inferred from the input prefix).
        strict: raise the first `DataError` instead of skipping the record and logging it in `errors`.
        max_error_rate: fail when the share of rejected questions, or of rejected profile items, is above
            this (None: no limit; a load without any valid question always fails).
        max_users, max_queries_per_user, max_profile_items: see `DatasetConfig`.

    Returns:
        A `LoadedDataset`. An empty profile is valid: the query is kept and the user has `n_profile=0`.
        A gold whose id matches no question is an `errors` row of the outputs file.

    Raises:
        DataError: an unreadable or empty file (always), or the first bad record under `strict`.
        RejectedLoadError: no valid question, or more rejected than `max_error_rate` allows.
        TTPValidationError: an unknown or uninferable task.
    """
    qfile = str(questions)
    errors = ErrorLog(strict=strict)
    records = read_json(questions)
    if not isinstance(records, list):
        raise DataError(f"top level must be a JSON list of questions, got {type(records).__name__}", file=qfile)
    gold_task, golds = read_outputs(Path(outputs), errors) if outputs is not None else (None, {})
    spec = _pick_task(task, gold_task, records, qfile)
    builder = DatasetBuilder(name, spec.name if spec else "unknown", errors, file=qfile)
    users_given = any(as_id(r.get("user_id")) is not None for r in records if isinstance(r, dict))
    n_empty = 0
    for i, rec in enumerate(records):
        try:
            qid, text, user_id, profile = _question(rec, i, qfile, builder, users_given)
        except DataError as e:
            errors.report(e, rejects="record")
            continue
        assert spec is not None  # a record with a string input exists, so the task was picked
        n_empty += not profile
        for j, raw in enumerate(profile):
            try:
                item = _profile_item(raw, spec, qid, j, qfile)
            except DataError as e:
                errors.report(e, rejects="item")
                continue
            builder.add_profile_item(user_id, **item, file=qfile, record_id=qid, field=f"profile[{j}]")
        builder.add_query(user_id, qid, text, extract_query_text(text, spec.query_marker), golds.get(qid))
    if outputs is not None:
        _report_unmatched_golds(golds, records, errors, str(outputs), qfile)
    _log_reference_coverage(builder, golds, outputs, n_empty)
    return builder.build(max_error_rate=max_error_rate, max_users=max_users,
                         max_queries_per_user=max_queries_per_user, max_profile_items=max_profile_items)


def _report_unmatched_golds(golds: dict[str, str], records: list[Any], errors: ErrorLog, ofile: str,
                            qfile: str) -> None:
    """A gold whose id is no question's id is an error row (a gold of a rejected question is not)."""
    ids = {as_id(r.get("id")) for r in records if isinstance(r, dict)}
    for gid in golds:
        if gid not in ids:
            errors.report(DataError(f"gold id matches no question in {qfile}", file=ofile, record_id=gid, field="id"))


def _log_reference_coverage(builder: DatasetBuilder, golds: dict[str, str], outputs: Any, n_empty: int) -> None:
    if n_empty:
        log.warning("%d question(s) have an empty profile (kept; their users may have n_profile=0)", n_empty)
    missing = len(builder.query_ids - golds.keys())
    if outputs is not None and missing:
        log.warning("%s: %d question(s) have no gold output (reference is null)", outputs, missing)
