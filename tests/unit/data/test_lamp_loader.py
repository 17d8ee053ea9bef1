"""`load_lamp`: real commit data, small LaMP fixtures, and every kind of bad input."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from ttp_ray.data.lamp import extract_query_text, load_lamp, resolve_task
from ttp_ray.data.schema import ERRORS, PROFILE, QUERIES, USERS
from ttp_ray.errors import DataError, TTPValidationError

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "data"
L4 = "Generate a headline for the following article: "


def item(i: str, title: Any = "a title", text: Any = "an article", **extra: Any) -> dict[str, Any]:
    return {"id": i, "title": title, "text": text, **extra}


def question(qid: Any, article: str = "something happened", profile: Any = None, **extra: Any) -> dict[str, Any]:
    return {"id": qid, "input": L4 + article, "profile": [item(f"{qid}0")] if profile is None else profile, **extra}


def write(tmp_path: Path, questions: list[Any], golds: dict[str, Any] | None = None, task: str = "LaMP_4",
          name: str = "bad.json") -> tuple[Path, Path | None]:
    q = tmp_path / name
    q.write_text(json.dumps(questions), encoding="utf-8")  # ASCII: a lone surrogate is written as its \u escape
    if golds is None:
        return q, None
    o = tmp_path / "outputs.json"
    o.write_text(json.dumps({"task": task, "golds": [{"id": k, "output": v} for k, v in golds.items()]}))
    return q, o


def error_rows(ds) -> list[dict[str, Any]]:
    return ds.errors.to_pylist()


# --- real data ------------------------------------------------------------------------------------------------

def test_real_commit_data(commit_data_dir: Path) -> None:
    ds = load_lamp(commit_data_dir / "questions.json", commit_data_dir / "outputs.json", name="commit")
    s = ds.summary()
    assert (s["n_users"], s["n_queries"], s["n_queries_with_reference"], s["n_errors"]) == (17, 51, 51, 0)
    assert ds.task == "commit_subject"
    assert ds.users.schema == USERS and ds.profile.schema == PROFILE and ds.queries.schema == QUERIES
    assert set(ds.users["n_queries"].to_pylist()) == {3}
    assert sum(ds.users["n_profile"].to_pylist()) == ds.profile.num_rows
    assert all(t.startswith("Files:") for t in ds.queries["query_text"].to_pylist())  # text after "change:"
    assert None not in ds.queries["reference"].to_pylist()
    # profile positions are 0..n-1 per user, and the input/output fields follow the commit map (text -> title)
    first = ds.profile.slice(0, 1).to_pylist()[0]
    assert first["position"] == 0 and first["input"].startswith("Files:") and first["date"].count("-") == 2


def test_real_data_limits(commit_data_dir: Path) -> None:
    full = load_lamp(commit_data_dir / "questions.json", commit_data_dir / "outputs.json", name="commit")
    ds = load_lamp(commit_data_dir / "questions.json", commit_data_dir / "outputs.json", name="commit",
                   max_users=5, max_queries_per_user=2, max_profile_items=10)
    longest = sorted(full.users.to_pylist(), key=lambda r: -r["n_profile"])[:5]
    assert set(ds.users["user_id"].to_pylist()) == {r["user_id"] for r in longest}
    assert set(ds.users["n_queries"].to_pylist()) == {2} and set(ds.users["n_profile"].to_pylist()) == {10}
    # the latest items are kept (profiles are oldest first)
    u = longest[0]["user_id"]
    kept = [r["position"] for r in ds.profile.to_pylist() if r["user_id"] == u]
    assert kept == list(range(longest[0]["n_profile"] - 10, longest[0]["n_profile"]))


# --- formats and tasks ----------------------------------------------------------------------------------------

def test_lamp4_fixture_user_split() -> None:
    ds = load_lamp(FIXTURES / "lamp4_small" / "questions.json", FIXTURES / "lamp4_small" / "outputs.json",
                   name="lamp4")
    assert ds.task == "LaMP_4"
    assert ds.users["user_id"].to_pylist() == ["q:110", "q:111", "q:112"]  # one user per question
    # empty profile: the query is kept and its user has n_profile=0; it is not an error
    assert ds.users["n_profile"].to_pylist() == [2, 1, 0]
    assert ds.errors.num_rows == 0
    q = ds.queries.to_pylist()[1]
    # non-ASCII is kept verbatim everywhere
    assert q["query_text"] == "Café owners in Zürich report record sales during the summer festival."
    assert q["reference"] == "Zürich cafés cash in on festival crowds"
    p = ds.profile.to_pylist()
    assert p[2]["output"] == "Bakeries feel the squeeze — flour up 30%" and p[2]["date"] == "2020"
    assert (p[0]["input"], p[0]["output"]) == (
        "The mayor announced a plan to expand public transit with three new bus lines.", "Mayor unveils transit expansion")


def test_task_inference_override_and_unknown(tmp_path: Path) -> None:
    q, _ = write(tmp_path, [question("1")])
    assert load_lamp(q, name="x").task == "LaMP_4"  # inferred from the input prefix
    assert load_lamp(q, name="x", task="LaMP-4").task == "LaMP_4"
    with pytest.raises(TTPValidationError, match="unknown task 'LaMP_9'; supported:"):
        load_lamp(q, name="x", task="LaMP_9")
    odd, _ = write(tmp_path, [{"id": "1", "input": "Summarize: x", "profile": []}], name="odd.json")
    with pytest.raises(TTPValidationError, match="cannot infer the task"):
        load_lamp(odd, name="x")


@pytest.mark.parametrize(
    ("task", "text", "expected"),
    [
        ("LaMP_4", "Generate a headline for the following article: A: b", "A: b"),
        ("LaMP_5", "Generate a title for the following abstract of a paper: We study X: Y.", "We study X: Y."),
        ("LaMP_7", "Paraphrase the following tweet without any explanation before or after it: so :) fun", "so :) fun"),
        ("commit_subject", "Generate a commit subject line for the following change:\nFiles: a.py (+1 -0)",
         "Files: a.py (+1 -0)"),
    ],
)
def test_query_text_markers(task: str, text: str, expected: str) -> None:
    assert extract_query_text(text, resolve_task(task).query_marker) == expected


def test_lamp7_profile_has_no_inputs(tmp_path: Path) -> None:
    rec = {"id": "600", "input": "Paraphrase the following tweet without any explanation before or after it: hi all",
           "profile": [{"id": "6000", "text": "SARS .. H1N1 .. please cherish your life"}]}
    q, o = write(tmp_path, [rec], {"600": "hello everyone"}, task="LaMP_7")
    ds = load_lamp(q, o, name="l7")
    assert ds.profile.to_pylist()[0]["input"] == "" and ds.profile.to_pylist()[0]["output"].startswith("SARS")
    assert ds.queries.to_pylist()[0]["query_text"] == "hi all"


def test_time_split_unions_profiles_by_item_id(tmp_path: Path) -> None:
    a, b, c = item("i1", "t1"), item("i2", "t2"), item("i3", "t3")
    qs = [question("1", profile=[a, b], user_id="u"), question("2", profile=[a, b, c], user_id="u"),
          question("3", profile=[a], user_id=7)]  # an int user id is cast to str
    q, o = write(tmp_path, qs, {"1": "x", "2": "y"})
    ds = load_lamp(q, o, name="t")
    assert ds.users.to_pylist() == [
        {"user_id": "u", "n_profile": 3, "n_queries": 2, "dataset": "t"},
        {"user_id": "7", "n_profile": 1, "n_queries": 1, "dataset": "t"},
    ]
    assert [r["item_id"] for r in ds.profile.to_pylist() if r["user_id"] == "u"] == ["i1", "i2", "i3"]
    assert ds.queries["reference"].to_pylist() == ["x", "y", None]  # outputs missing for a question -> null


def test_conflicting_duplicate_profile_item_is_reported(tmp_path: Path) -> None:
    qs = [question("1", profile=[item("i1", "old")], user_id="u"), question("2", profile=[item("i1", "new")], user_id="u")]
    q, _ = write(tmp_path, qs)
    ds = load_lamp(q, name="t", max_error_rate=1.0)
    assert ds.profile["output"].to_pylist() == ["old"]
    [row] = error_rows(ds)
    assert (row["record_id"], row["field"]) == ("2", "profile[0]") and "repeats with different content" in row["reason"]


# --- bad input: strict raises naming file/record/field; lenient skips, logs and keeps an ERRORS row ----------

BAD_CASES = [
    # (name, record, record_id, field, reason fragment)
    ("missing input", {"id": "q1", "profile": []}, "q1", "input", "missing field 'input'"),
    ("missing id", {"input": L4 + "x", "profile": []}, "#1", "id", "missing 'id' (a non-blank string or an int)"),
    ("empty id", {"id": "", "input": L4 + "x", "profile": []}, "#1", "id",
     "'id' must be a non-blank string or an int, got ''"),
    ("lone surrogate in input", {"id": "q1", "input": L4 + "x\ud800", "profile": []}, "q1", "input",
     "'input' is not valid UTF-8 text: character 48 is a lone surrogate \\ud800"),
    ("profile not a list", question("q1", profile="oops"), "q1", "profile", "'profile' must be a list, got str"),
    ("missing profile", {"id": "q1", "input": L4 + "x"}, "q1", "profile", "missing field 'profile'"),
    ("input not a string", {"id": "q1", "input": 5, "profile": []}, "q1", "input", "'input' must be a string, got int"),
    ("item output not a string", question("q1", profile=[item("i", title=3)]), "q1", "profile[0].title",
     "'title' must be a string, got int"),
    ("item missing field", question("q1", profile=[{"id": "i", "title": "t"}]), "q1", "profile[0].text",
     "missing field 'text'"),
    ("item missing id", question("q1", profile=[{"title": "t", "text": "x"}]), "q1", "profile[0].id",
     "missing 'id'"),
    ("item date wrong type", question("q1", profile=[item("i", date=2020.5)]), "q1", "profile[0].date",
     "'date' must be a string, an int year or a date, got 2020.5"),
    ("item not an object", question("q1", profile=["just text"]), "q1", "profile[0]",
     "profile item must be an object"),
    ("user_id wrong type", question("q1", user_id=["u"]), "q1", "user_id",
     "'user_id' must be a non-blank string or an int, got ['u']"),
]


@pytest.mark.parametrize(("case", "record", "record_id", "field", "reason"), BAD_CASES, ids=[c[0] for c in BAD_CASES])
def test_bad_record_strict_raises_with_location(tmp_path: Path, case, record, record_id, field, reason) -> None:
    q, _ = write(tmp_path, [question("ok"), record])
    expected = re.escape(f"bad.json, record '{record_id}', field '{field}': {reason}")
    with pytest.raises(DataError, match=expected):
        load_lamp(q, name="x", task="LaMP_4", strict=True)


@pytest.mark.parametrize(("case", "record", "record_id", "field", "reason"), BAD_CASES, ids=[c[0] for c in BAD_CASES])
def test_bad_record_lenient_is_skipped_and_kept_in_errors(tmp_path: Path, case, record, record_id, field, reason) -> None:
    q, _ = write(tmp_path, [question("ok"), record])
    ds = load_lamp(q, name="x", task="LaMP_4", max_error_rate=1.0)
    assert ds.errors.schema == ERRORS
    [row] = error_rows(ds)
    assert row["stage"] == "load" and row["file"] == str(q)
    assert (row["record_id"], row["field"]) == (record_id, field)
    assert reason in row["reason"]
    assert "ok" in ds.queries["query_id"].to_pylist()
    # a bad profile item only drops the item: the question itself is kept
    assert ("q1" in ds.queries["query_id"].to_pylist()) == field.startswith("profile[")


def test_int_ids_are_cast_and_duplicates_reported(tmp_path: Path) -> None:
    q, o = write(tmp_path, [question(7, profile=[item(70)]), question("dup"), question("dup", article="other")],
                 {"7": "seven", "dup": "d"})
    ds = load_lamp(q, o, name="x", max_error_rate=1.0)
    assert ds.queries["query_id"].to_pylist() == ["7", "dup"]
    assert ds.queries["reference"].to_pylist()[0] == "seven" and ds.profile["item_id"].to_pylist()[0] == "70"
    [row] = error_rows(ds)
    assert (row["record_id"], row["field"]) == ("dup", "id") and "duplicate question id" in row["reason"]
    with pytest.raises(DataError, match=r"record 'dup', field 'id': duplicate question id"):
        load_lamp(q, o, name="x", strict=True)


def test_gold_output_wrong_type(tmp_path: Path) -> None:
    q, o = write(tmp_path, [question("1"), question("2")], {"1": 42, "2": "fine"})
    ds = load_lamp(q, o, name="x")
    assert ds.queries["reference"].to_pylist() == [None, "fine"]
    [row] = error_rows(ds)
    assert (row["file"], row["record_id"], row["field"]) == (str(o), "1", "output")
    with pytest.raises(DataError, match=r"outputs\.json, record '1', field 'output': 'output' must be a string, got int"):
        load_lamp(q, o, name="x", strict=True)


@pytest.mark.parametrize("strict", [False, True])
def test_broken_json_names_file_and_position(tmp_path: Path, strict: bool) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text('[\n {"id": "1", "input": "x",\n  "profile": [}\n]')
    with pytest.raises(DataError, match=r"broken\.json: invalid JSON at line 3, column 15 \(char \d+\)"):
        load_lamp(broken, name="x", task="LaMP_4", strict=strict)


def test_top_level_must_be_a_list(tmp_path: Path) -> None:
    p = tmp_path / "obj.json"
    p.write_text('{"id": "1"}')
    with pytest.raises(DataError, match=r"obj\.json: top level must be a JSON list of questions, got dict"):
        load_lamp(p, name="x", task="LaMP_4")
