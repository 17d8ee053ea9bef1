"""data/io.py and the shared field rules on malformed input: one bad line or value never loses the rest,
unreadable files name themselves, a load with no valid query or too many rejections fails."""

from __future__ import annotations

import datetime as dt
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ttp_ray.data._fields import as_id, check_date
from ttp_ray.data.dataset import RejectedLoadError
from ttp_ray.data.io import iter_records, read_json
from ttp_ray.data.lamp import load_lamp
from ttp_ray.errors import DataError, TTPValidationError


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


def test_json_keeps_a_non_utf8_byte_in_a_string_for_its_record(tmp_path) -> None:
    p = tmp_path / "q.json"
    p.write_bytes(b'[{"id": "a", "text": "caf\xe9"}, {"id": "b", "text": "ok \\ud800"}]')
    assert read_json(p) == [{"id": "a", "text": "caf\udce9"}, {"id": "b", "text": "ok \ud800"}]
    p.write_bytes(b'[{"id": "a", \xff "text": "x"}]')  # outside a string: a syntax error that says why
    with pytest.raises(DataError, match=r"invalid JSON at line 1, column 14 .*\(the file is not UTF-8 at byte 13"):
        read_json(p)


@pytest.mark.parametrize(("content", "reason"), [(b"", "file is empty"), (b" \n", "file is empty"),
                                                  ("[1]".encode("utf-16"), "UTF-16 text is not supported")])
def test_empty_or_utf16_json_is_a_data_error(tmp_path, content: bytes, reason: str) -> None:
    p = tmp_path / "q.json"
    p.write_bytes(content)
    with pytest.raises(DataError, match=rf"q\.json: {reason}"):
        read_json(p)


def test_parquet_row_that_is_not_utf8_is_one_error_naming_the_column(tmp_path) -> None:
    p = tmp_path / "t.parquet"
    text = pa.array([b"a", b"caf\xe9", b"c"], pa.binary()).view(pa.string())
    pq.write_table(pa.table({"id": [1, 2, 3], "text": text}), p)
    rows = list(iter_records(p))
    assert [r for _, r in rows if not isinstance(r, DataError)] == [{"id": 1, "text": "a"}, {"id": 3, "text": "c"}]
    err = rows[1][1]
    assert isinstance(err, DataError) and (err.record_id, err.field) == ("#1", "text") and "not UTF-8" in err.reason


@pytest.mark.parametrize(("value", "expected"), [
    ("a", "a"), (" a ", " a "), (7, "7"), (0, "0"), ("", None), ("  ", None), (True, None), (1.0, None),
    (None, None), ([1], None), ("x\ud800", None),
])
def test_id_rule(value, expected) -> None:
    assert as_id(value) == expected


@pytest.mark.parametrize(("value", "expected"), [
    (None, None), ("2020-01-02", "2020-01-02"), (2019, "2019"), (dt.date(2020, 1, 2), "2020-01-02"),
    (dt.datetime(2020, 1, 2, 3, 4), "2020-01-02"),
])
def test_date_rule_accepts(value, expected) -> None:
    assert check_date(value, file="f", record_id="r", field="profile[0].date") == expected


@pytest.mark.parametrize("value", [2019.0, True, [2019], {"y": 2019}, "20\udc8019"])
def test_date_rule_rejects(value) -> None:
    with pytest.raises(DataError, match=r"f, record 'r', field 'profile\[0\]\.date'"):
        check_date(value, file="f", record_id="r", field="profile[0].date")


def _questions(tmp_path, n_good: int, n_bad: int):
    good = [{"id": f"g{i}", "input": "Generate a headline for the following article: x", "profile": []}
            for i in range(n_good)]
    q = tmp_path / "q.json"
    q.write_text(json.dumps(good + [{"id": f"b{i}", "profile": []} for i in range(n_bad)]))
    return q


def test_max_error_rate(tmp_path) -> None:
    q = _questions(tmp_path, 9, 1)  # 10% rejected: at the default limit, not above it
    assert load_lamp(q, name="x").queries.num_rows == 9
    with pytest.raises(RejectedLoadError, match=r"1 of 10 records rejected \(10\.0% > max_error_rate 5\.0%\)") as e:
        load_lamp(q, name="x", max_error_rate=0.05)
    assert e.value.field == "input" and e.value.errors.num_rows == 1
    assert load_lamp(_questions(tmp_path, 1, 5), name="x", max_error_rate=None).queries.num_rows == 1
    with pytest.raises(TTPValidationError, match=r"`max_error_rate` must be in \[0, 1\], got 1\.5"):
        load_lamp(q, name="x", max_error_rate=1.5)


@pytest.mark.parametrize("strict", [False, True])
def test_no_valid_query_is_an_error_even_without_a_limit(tmp_path, strict: bool) -> None:
    with pytest.raises(RejectedLoadError, match=r"q\.json: no valid query: the input holds no records"):
        load_lamp(_questions(tmp_path, 0, 0), name="x", task="LaMP_4", strict=strict, max_error_rate=None)
    with pytest.raises(RejectedLoadError, match=r"q\.json, field 'input': no valid query: all 2 record\(s\)"):
        load_lamp(_questions(tmp_path, 0, 2), name="x", task="LaMP_4", max_error_rate=None)
