"""`run_score`: LaMP's predictions-vs-golds evaluation (id-set equality, stripped texts, mean F1)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from ttp_ray.errors import DataError
from ttp_ray.scoring import run_score
from ttp_ray.scoring.rouge import rouge_f1


def write(path: Path, task: str, golds: dict[str, object]) -> Path:
    path.write_text(json.dumps({"task": task, "golds": [{"id": k, "output": v} for k, v in golds.items()]}))
    return path


def test_scores_match_per_example_rouge(tmp_path: Path, capsys) -> None:
    golds = write(tmp_path / "golds.json", "LaMP_4", {"1": "Bike lanes win approval", "2": "School vote delayed"})
    preds = write(tmp_path / "preds.json", "LaMP-4", {"2": "  school vote is delayed \n", "1": "bike lanes"})
    out = tmp_path / "per_example.parquet"
    result = run_score(preds, golds, out)
    r1, rl = rouge_f1(["bike lanes", "school vote is delayed"], ["Bike lanes win approval", "School vote delayed"])
    assert result["n"] == 2
    assert result["rouge-1"] == pytest.approx(r1.mean())
    assert result["rouge-L"] == pytest.approx(rl.mean())
    table = pq.read_table(out)
    assert table["id"].to_pylist() == ["1", "2"]
    assert table["prediction"].to_pylist()[1] == "school vote is delayed"  # stripped, as LaMP does
    assert "rouge-1=" in capsys.readouterr().out


def test_id_sets_must_be_equal(tmp_path: Path) -> None:
    golds = write(tmp_path / "golds.json", "LaMP_4", {"1": "a", "2": "b"})
    preds = write(tmp_path / "preds.json", "LaMP_4", {"1": "a", "3": "c"})
    with pytest.raises(DataError, match=r"preds\.json.*1 missing \(e\.g\. \['2'\]\), 1 unknown \(e\.g\. \['3'\]\)"):
        run_score(preds, golds)


def test_task_mismatch_and_bad_entries(tmp_path: Path) -> None:
    golds = write(tmp_path / "golds.json", "LaMP_4", {"1": "a"})
    with pytest.raises(DataError, match="predictions are for task 'LaMP_5' but golds for 'LaMP_4'"):
        run_score(write(tmp_path / "p5.json", "LaMP_5", {"1": "a"}), golds)
    with pytest.raises(DataError, match=r"bad\.json, record '1', field 'output': 'output' must be a string"):
        run_score(write(tmp_path / "bad.json", "LaMP_4", {"1": 7}), golds)
