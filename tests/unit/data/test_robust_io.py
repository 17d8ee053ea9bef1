"""data/io.py on malformed files: one bad line never loses the rest, unreadable files name themselves."""

from __future__ import annotations

import pytest

from ttp_ray.data.io import iter_records
from ttp_ray.errors import DataError


def test_non_utf8_line_is_one_error_and_the_rest_loads(tmp_path) -> None:
    p = tmp_path / "t.jsonl"
    p.write_bytes(b'\xef\xbb\xbf{"a": 1}\n\xff\xfe\n{"b": 2}\n')
    rows = list(iter_records(p))
    assert [r for r, _ in rows] == ["line 1", "line 2", "line 3"]
    assert rows[0][1] == {"a": 1} and rows[2][1] == {"b": 2}
    assert isinstance(rows[1][1], DataError) and "not UTF-8" in str(rows[1][1])


@pytest.mark.parametrize("name,content", [("bad.parquet", b"not a parquet file"), ("none.jsonl", None)])
def test_unreadable_or_missing_file_is_a_data_error(tmp_path, name: str, content: bytes | None) -> None:
    p = tmp_path / name
    if content is not None:
        p.write_bytes(content)
    with pytest.raises(DataError) as e:
        list(iter_records(p))
    assert name in str(e.value)
