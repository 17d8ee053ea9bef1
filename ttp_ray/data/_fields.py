"""Field rules every loader applies (LaMP and LongLaMP agree on ids, dates and text by sharing these).

Each check returns the clean value or raises a `DataError` naming the file, record and field:

* **text**: a `str` that encodes as UTF-8. A lone surrogate (a JSON `"\\ud800"` escape, or a byte that is not
  UTF-8, which the readers keep as a surrogate) is an error of that field, never of the whole load.
* **id** (question/row id, `user_id`, profile item id, gold id): a non-blank string or an int (cast to a
  string); bools, floats, blank strings and anything else are errors.
* **date**: absent/null, a string, an int year or a `datetime.date` (Parquet); anything else is an error.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from ttp_ray.errors import DataError

_REPR_CHARS = 60  # a value quoted in an error message is cut to this many characters


def short_repr(value: Any) -> str:
    """`repr(value)`, cut so that a huge value never floods an error message."""
    r = repr(value)
    return r if len(r) <= _REPR_CHARS else r[:_REPR_CHARS] + f"...<{len(r)} chars>"


def bad_unicode_at(s: str) -> int | None:
    """Index of the first character of `s` that cannot be encoded as UTF-8 (a lone surrogate), else None."""
    try:
        s.encode("utf-8")
    except UnicodeEncodeError as e:
        return e.start
    return None


def as_id(value: Any) -> str | None:
    """The id rule: a non-blank string (kept verbatim) or an int (cast); None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and value.strip() and bad_unicode_at(value) is None:
        return value
    return None


def has_value(rec: Any, key: str) -> bool:
    """Whether `rec` is an object carrying a non-null `key` (a null field counts as absent)."""
    return isinstance(rec, dict) and rec.get(key) is not None


def check_id(value: Any, *, key: str, file: str, record_id: str | None, field: str) -> str:
    """`value` under the id rule, or a `DataError` naming `field`."""
    if isinstance(value, str) and value.strip():
        return check_text(value, key=key, file=file, record_id=record_id, field=field)
    out = as_id(value)
    if out is None:
        if value is None:
            raise DataError(f"missing {key!r} (a non-blank string or an int)", file=file, record_id=record_id,
                            field=field)
        raise DataError(f"{key!r} must be a non-blank string or an int, got {short_repr(value)}", file=file,
                        record_id=record_id, field=field)
    return out


def check_text(value: Any, *, key: str, file: str, record_id: str | None, field: str, present: bool = True,
               allow_number: bool = False) -> str:
    """`value` as valid text, or a `DataError` naming `field`. `present=False`: the key is absent.

    `allow_number`: an int or float is accepted and formatted with `str` (LongLaMP ratings).
    """
    if not present:
        raise DataError(f"missing field {key!r}", file=file, record_id=record_id, field=field)
    if value is None:
        raise DataError(f"{key!r} is null", file=file, record_id=record_id, field=field)
    if allow_number and isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise DataError(f"{key!r} must be a string, got {type(value).__name__}", file=file, record_id=record_id,
                        field=field)
    pos = bad_unicode_at(value)
    if pos is not None:
        code = ord(value[pos])
        what = (f"byte 0x{code - 0xDC00:02x}, which is not UTF-8 (or a lone surrogate \\u{code:04x} escape)"
                if 0xDC80 <= code <= 0xDCFF else f"a lone surrogate \\u{code:04x} (a \\u escape without its pair)")
        raise DataError(f"{key!r} is not valid UTF-8 text: character {pos} is {what}", file=file,
                        record_id=record_id, field=field)
    return value


def check_field(rec: dict[str, Any], key: str, *, file: str, record_id: str | None, where: str = "",
                allow_number: bool = False) -> str:
    """`rec[key]` as valid text; the error names `<where>.<key>` (`where=""`: a top-level field)."""
    return check_text(rec.get(key), key=key, file=file, record_id=record_id, present=key in rec,
                      field=f"{where}.{key}" if where else key, allow_number=allow_number)


def check_date(value: Any, *, file: str, record_id: str | None, field: str) -> str | None:
    """A profile item's date under the date rule: None, the string verbatim, `str(year)` or ISO `YYYY-MM-DD`."""
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value.date().isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str):
        return check_text(value, key="date", file=file, record_id=record_id, field=field)
    raise DataError(f"'date' must be a string, an int year or a date, got {short_repr(value)}", file=file,
                    record_id=record_id, field=field)
