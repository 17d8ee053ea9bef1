"""File formats: JSON / JSONL / Parquet in, deterministic JSON and schema-conformed Parquet out.

Broken files fail with a `DataError` naming the file and the position (line, column, character offset);
broken JSONL lines are reported one by one so the caller can skip them.
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


def read_json(path: str | Path) -> Any:
    """Parse a JSON file; a syntax error names the file, line, column and character offset."""
    path = Path(path)
    if not path.is_file():
        raise DataError("file not found", file=str(path))
    try:
        with path.open(encoding="utf-8-sig") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise DataError(f"invalid JSON at line {e.lineno}, column {e.colno} (char {e.pos}): {e.msg}", file=str(path)) from None
    except UnicodeDecodeError as e:
        raise DataError(f"not UTF-8 at byte {e.start}: {e.reason}", file=str(path)) from None


def iter_records(path: str | Path) -> Iterator[tuple[str, Any]]:
    """Yield `(position, record)` from a JSON list, a JSONL file or a Parquet file (chosen by suffix).

    `position` is `"#<index>"` (JSON list, Parquet) or `"line <n>"` (JSONL). A JSONL line that does not parse
    is yielded as a `DataError` instance in place of the record, so one bad line does not lose the file.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if not path.is_file():
        raise DataError("file not found", file=str(path))
    if suffix == ".parquet":
        try:
            rows = pq.read_table(path).to_pylist()
        except (pa.ArrowException, OSError) as e:
            raise DataError(f"unreadable Parquet: {str(e).splitlines()[0] if str(e) else type(e).__name__}",
                            file=str(path)) from None
        for i, row in enumerate(rows):
            yield f"#{i}", row
    elif suffix == ".jsonl":
        with path.open("rb") as f:
            for n, raw in enumerate(f, start=1):
                if n == 1 and raw.startswith(b"\xef\xbb\xbf"):
                    raw = raw[3:]
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    yield f"line {n}", DataError(f"not UTF-8 at line {n}, byte {e.start}: {e.reason}",
                                                 file=str(path), record_id=f"line {n}")
                    continue
                if not line.strip():
                    continue
                try:
                    yield f"line {n}", json.loads(line)
                except json.JSONDecodeError as e:
                    yield f"line {n}", DataError(f"invalid JSON at line {n}, column {e.colno}: {e.msg}",
                                                 file=str(path), record_id=f"line {n}")
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
    return conform(pq.read_table(path), schema)
