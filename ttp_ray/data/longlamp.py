"""LongLaMP rows (`{input, output, profile}` from the HF dataset `LongLaMP/LongLaMP`) -> `LoadedDataset`.

Rows may come as a JSON list, JSONL or Parquet (an HF split saved with `to_parquet`). Rows have no user id in
the released data, so each row is its own user (`"r:<id>"`) unless a `user_id` field is present; the query id
is the row's `id` if present, else its position (`"r<index>"`). Generated ids never meet real ones: when some
row of the file has a valid `id` (or `user_id`), a row without one is an error. Profile items rarely carry
ids: a missing one becomes `"<query_id>:<j>"`. Ids, dates and text follow the rules of `data/_fields.py`,
shared with the LaMP loader.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from ttp_ray.data._fields import as_id, check_date, check_field, check_id, check_text, has_value
from ttp_ray.data.config import MAX_ERROR_RATE
from ttp_ray.data.dataset import DatasetBuilder, ErrorLog, LoadedDataset
from ttp_ray.data.io import iter_records
from ttp_ray.data.lamp import extract_query_text, user_of
from ttp_ray.errors import DataError, TTPValidationError

__all__ = ["LONGLAMP_TASKS", "load_longlamp"]

LongLaMPTask = Literal["abstract", "topic", "review"]


def _text(item: dict[str, Any], key: str, where: str, qid: str, file: str, *, allow_number: bool = False) -> str:
    """`item[key]` as valid text, or a `DataError` naming `<where>.<key>`."""
    return check_field(item, key, file=file, record_id=qid, where=where, allow_number=allow_number)


def _abstract(item: dict[str, Any], where: str, qid: str, file: str) -> tuple[str, str]:
    return _text(item, "title", where, qid, file), _text(item, "abstract", where, qid, file)


def _topic(item: dict[str, Any], where: str, qid: str, file: str) -> tuple[str, str]:
    return _text(item, "input", where, qid, file), _text(item, "output", where, qid, file)


def _review(item: dict[str, Any], where: str, qid: str, file: str) -> tuple[str, str]:
    # The product, the rating and the summary play the query's role; the review text is the user's output.
    overall = _text(item, "overall", where, qid, file, allow_number=True)
    summary = _text(item, "summary", where, qid, file)
    description = _text(item, "description", where, qid, file)
    return f"rating: {overall}; summary: {summary}; product: {description}", _text(item, "reviewText", where, qid, file)


# task -> (task name in the tables, profile item -> (input, output), query marker: "" = the whole input)
LONGLAMP_TASKS: dict[str, tuple[str, Callable[..., tuple[str, str]], str]] = {
    "abstract": ("LongLaMP_abstract", _abstract, "items:"),
    "topic": ("LongLaMP_topic", _topic, ""),
    "review": ("LongLaMP_review", _review, ""),
}


def _row(rec: Any, pos: str, index: int, file: str, builder: DatasetBuilder, *, ids_given: bool,
         users_given: bool) -> tuple[str, str, str, str | None, list[Any]]:
    """Validate a row: `(query_id, user_id, input, output, profile)`."""
    if isinstance(rec, DataError):
        raise rec
    if not isinstance(rec, dict):
        raise DataError(f"row must be an object, got {type(rec).__name__}", file=file, record_id=pos)
    if has_value(rec, "id"):
        qid = check_id(rec["id"], key="id", file=file, record_id=pos, field="id")
    elif ids_given:
        raise DataError("missing 'id' while other rows have one", file=file, record_id=pos, field="id")
    else:
        qid = f"r{index}"
    if builder.has_query(qid):
        raise DataError("duplicate row id; kept the first occurrence", file=file, record_id=qid, field="id")
    text = _text(rec, "input", "", qid, file)
    output = rec.get("output")
    if output is not None:  # a missing or null output is kept as a null reference
        output = check_text(output, key="output", file=file, record_id=qid, field="output")
    user_id = user_of(rec, qid, f"r:{qid}", users_given=users_given, file=file)
    profile = rec.get("profile")
    if not isinstance(profile, list):
        reason = "missing field 'profile'" if "profile" not in rec else f"'profile' must be a list, got {type(profile).__name__}"
        raise DataError(reason, file=file, record_id=qid, field="profile")
    return qid, user_id, text, output, profile


def load_longlamp(
    path: str | Path,
    *,
    task: LongLaMPTask,
    name: str,
    strict: bool = False,
    max_error_rate: float | None = MAX_ERROR_RATE,
    max_users: int | None = None,
    max_queries_per_user: int | None = None,
    max_profile_items: int | None = None,
) -> LoadedDataset:
    """Load LongLaMP rows for `task` ("abstract", "topic" or "review") into the project's tables.

    Profile items map to (input, output) as: abstract `title -> abstract`; topic `input -> output`;
    review `"rating: {overall}; summary: {summary}; product: {description}" -> reviewText`. A row with a
    missing or null `output` is kept with a null reference. Bad rows/items, `max_error_rate` and the id and
    date rules are those of `load_lamp` (see docs/data.md).
    """
    if task not in LONGLAMP_TASKS:
        raise TTPValidationError(f"unknown LongLaMP task {task!r}; supported: {sorted(LONGLAMP_TASKS)}",
                                 parameter="longlamp_task", value=task)
    task_name, read_item, marker = LONGLAMP_TASKS[task]
    file = str(path)
    errors = ErrorLog(strict=strict)
    builder = DatasetBuilder(name, task_name, errors, file=file)
    records = list(iter_records(path))
    ids_given = any(isinstance(r, dict) and as_id(r.get("id")) is not None for _, r in records)
    users_given = any(isinstance(r, dict) and as_id(r.get("user_id")) is not None for _, r in records)
    for index, (pos, rec) in enumerate(records):
        try:
            qid, user_id, text, output, profile = _row(rec, pos, index, file, builder, ids_given=ids_given,
                                                       users_given=users_given)
        except DataError as e:
            errors.report(e, rejects="record")
            continue
        for j, item in enumerate(profile):
            where = f"profile[{j}]"
            try:
                if not isinstance(item, dict):
                    raise DataError(f"profile item must be an object, got {type(item).__name__}", file=file,
                                    record_id=qid, field=where)
                item_id = (check_id(item["id"], key="id", file=file, record_id=qid, field=f"{where}.id")
                           if has_value(item, "id") else f"{qid}:{j}")
                item_input, item_output = read_item(item, where, qid, file)
                date = check_date(item.get("date"), file=file, record_id=qid, field=f"{where}.date")
            except DataError as e:
                errors.report(e, rejects="item")
                continue
            builder.add_profile_item(user_id, item_id, item_input, item_output, date, file=file, record_id=qid,
                                     field=where)
        builder.add_query(user_id, qid, text, extract_query_text(text, marker), output)
    return builder.build(max_error_rate=max_error_rate, max_users=max_users,
                         max_queries_per_user=max_queries_per_user, max_profile_items=max_profile_items)
