"""File formats: JSON / JSONL / Parquet in, deterministic JSON and schema-conformed Parquet out.

Broken files fail with a `DataError` naming the file and the position (line, column, character offset);
broken JSONL lines (and unconvertible Parquet rows) are reported one by one so the caller can skip them, and
bytes that are not UTF-8 inside a JSON string reach the loaders as lone surrogates, so only the record holding
them is rejected.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ttp_ray.data.schema import conform
from ttp_ray.errors import DataError

__all__ = ["iter_records", "read_json", "read_table", "write_json", "write_table"]


_UTF8_BOM = b"\xef\xbb\xbf"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
_PARQUET_BATCH = 4096  # rows converted to Python at a time (a batch that fails is retried row by row)


def _decode(raw: bytes) -> str:
    """UTF-8 text; a byte that is not UTF-8 becomes a lone surrogate (`surrogateescape`), so that the field
    holding it fails validation in its own record instead of failing the whole file."""
    return raw.decode("utf-8", errors="surrogateescape")


def _not_utf8(raw: bytes) -> str | None:
    """Where `raw` stops being UTF-8 (`"byte <n>: <reason>"`), or None when it is valid."""
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return f"byte {e.start}: {e.reason}"
    return None


def _read_bytes(path: Path) -> bytes:
    if not path.is_file():
        raise DataError("file not found", file=str(path))
    try:
        return path.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read the file: {e.strerror or type(e).__name__}", file=str(path)) from None


def read_json(path: str | Path) -> Any:
    """Parse a JSON file (UTF-8, BOM allowed); a syntax error names the file, line, column and character offset.

    Bytes that are not UTF-8 inside a string are kept as lone surrogates, for the loaders to reject the one
    record holding them (see `data/_fields.py`); elsewhere they are a syntax error. An empty file is an error.
    """
    path = Path(path)
    raw = _read_bytes(path)
    if raw.startswith(_UTF8_BOM):
        raw = raw[len(_UTF8_BOM):]
    elif raw.startswith(_UTF16_BOMS):
        raise DataError("UTF-16 text is not supported; save the file as UTF-8", file=str(path))
    text = _decode(raw)
    if not text.strip():
        raise DataError("file is empty", file=str(path))
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        bad = _not_utf8(raw)
        note = f" (the file is not UTF-8 at {bad})" if bad else ""
        raise DataError(f"invalid JSON at line {e.lineno}, column {e.colno} (char {e.pos}): {e.msg}{note}",
                        file=str(path)) from None
    except RecursionError:
        raise DataError("invalid JSON: nested too deeply", file=str(path)) from None


def _jsonl_record(raw: bytes, n: int, file: str) -> Any:
    """One JSONL line as a record, or a `DataError` (returned, not raised) saying why it is not one."""
    try:
        return json.loads(_decode(raw))
    except (json.JSONDecodeError, RecursionError) as e:
        bad = _not_utf8(raw)
        if bad is not None:
            reason = f"not UTF-8 at line {n}, {bad}"
        elif isinstance(e, RecursionError):
            reason = f"invalid JSON at line {n}: nested too deeply"
        else:
            reason = f"invalid JSON at line {n}, column {e.colno}: {e.msg}"
        return DataError(reason, file=file, record_id=f"line {n}")


def _parquet_row(batch: pa.RecordBatch, k: int, index: int, file: str) -> dict[str, Any] | DataError:
    """Row `k` of `batch` as a dict, or a `DataError` naming the first column that cannot be converted (a
    string that is not UTF-8, for instance)."""
    row = {}
    for name, column in zip(batch.schema.names, batch.columns, strict=True):
        try:
            row[name] = column[k].as_py()
        except UnicodeDecodeError as e:
            return DataError(f"not UTF-8 at byte {e.start}: {e.reason}", file=file, record_id=f"#{index}", field=name)
        except (pa.ArrowException, ValueError) as e:
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            return DataError(f"unreadable Parquet value: {reason}", file=file, record_id=f"#{index}", field=name)
    return row


def _parquet_rows(path: Path) -> Iterator[tuple[str, Any]]:
    file = str(path)
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"unreadable Parquet: {str(e).splitlines()[0] if str(e) else type(e).__name__}",
                        file=file) from None
    i = 0
    for batch in table.to_batches(max_chunksize=_PARQUET_BATCH):
        try:
            rows: list[Any] = batch.to_pylist()
        except (pa.ArrowException, UnicodeDecodeError, ValueError):  # find the bad rows; keep the others
            rows = [_parquet_row(batch, k, i + k, file) for k in range(batch.num_rows)]
        for row in rows:
            yield f"#{i}", row
            i += 1


def iter_records(path: str | Path) -> Iterator[tuple[str, Any]]:
    """Yield `(position, record)` from a JSON list, a JSONL file or a Parquet file (chosen by suffix).

    `position` is `"#<index>"` (JSON list, Parquet) or `"line <n>"` (JSONL). A JSONL line that does not parse
    (or a Parquet row that cannot be converted) is yielded as a `DataError` instance in place of the record,
    so one bad line does not lose the file. Blank JSONL lines are skipped; a BOM is dropped. A file that
    cannot be read at all raises a `DataError` naming it.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        if not path.is_file():
            raise DataError("file not found", file=str(path))
        yield from _parquet_rows(path)
    elif suffix == ".jsonl":
        if not path.is_file():
            raise DataError("file not found", file=str(path))
        try:
            f = path.open("rb")
        except OSError as e:
            raise DataError(f"cannot read the file: {e.strerror or type(e).__name__}", file=str(path)) from None
        with f:
            for n, raw in enumerate(f, start=1):
                if n == 1 and raw.startswith(_UTF8_BOM):
                    raw = raw[len(_UTF8_BOM):]
                if raw.strip():
                    yield f"line {n}", _jsonl_record(raw, n, str(path))
    else:
        data = read_json(path)
        if not isinstance(data, list):
            raise DataError(f"top level must be a JSON list of records, got {type(data).__name__}", file=str(path))
        for i, row in enumerate(data):
            yield f"#{i}", row


def write_json(obj: Any, path: str | Path) -> Path:
    """Write JSON deterministically (stable key order, UTF-8 kept verbatim), so equal inputs give equal bytes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    return path


def write_table(table: pa.Table, path: str | Path, schema: pa.Schema) -> Path:
    """Write `table` as Parquet after conforming it to `schema` (fails naming missing columns)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(conform(table, schema), path)
    return path


def read_table(path: str | Path, schema: pa.Schema) -> pa.Table:
    """Read a Parquet file and conform it to `schema`."""
    path = Path(path)
    if not path.is_file():
        raise DataError("file not found", file=str(path))
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"unreadable Parquet: {str(e).splitlines()[0] if str(e) else type(e).__name__}",
                        file=str(path)) from None
    return conform(table, schema)
