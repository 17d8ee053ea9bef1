"""`rouge_f1` must equal rouge_score's RougeScorer (what LaMP's evaluator runs) on every pair."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rouge_score import rouge_scorer
from rouge_score import tokenize as rs_tokenize

from ttp_ray.data.schema import CANDIDATES
from ttp_ray.scoring.rouge import corpus_rouge, rouge_f1, score_candidates, tokenize

SCORER = rouge_scorer.RougeScorer(["rouge1", "rougeL"], use_stemmer=False)

EDGE_CASES = [
    ("", ""),
    ("", "fix the bug"),
    ("fix the bug", ""),
    ("!!! --- ???", "fix the bug"),
    ("fix the bug", "... ;;; ,,,"),
    ("!!! --- ???", "... ;;; ,,,"),
    ("Zürich café — naïve façade", "zurich cafe naive facade"),
    ("日本語のテキスト 🚀 emoji", "emoji only 🚀"),
    ("İstanbul KELVIN ẞtraße", "i̇stanbul kelvin sstrasse"),  # non-ASCII that lowercases to ASCII letters
    ("[svn r63191] * remove \"--exec\" * cleanup", "[svn r63190] no resultlog plugin"),
    ("a a a a b", "a b b b b"),
    ("the cat sat on the mat", "the cat sat on the mat"),
    ("word " * 70, "word " * 65 + "other"),  # > 64 reference tokens: the big-int LCS path
    ("x1 y2 z3", "X1, Y2; Z3."),
]


def reference_scores(preds: list[str], refs: list[str]) -> tuple[np.ndarray, np.ndarray]:
    scores = [SCORER.score(r, p) for p, r in zip(preds, refs, strict=True)]
    return (np.array([s["rouge1"].fmeasure for s in scores], dtype=float),
            np.array([s["rougeL"].fmeasure for s in scores], dtype=float))


def assert_parity(preds: list[str], refs: list[str]) -> None:
    r1, rl = rouge_f1(preds, refs)
    e1, el = reference_scores(preds, refs)
    np.testing.assert_allclose(r1, e1, rtol=0, atol=1e-12)
    np.testing.assert_allclose(rl, el, rtol=0, atol=1e-12)


def real_pairs(commit_data_dir) -> tuple[list[str], list[str]]:
    """Each profile title vs the same author's next title, and vs its own (long) change text."""
    questions = json.loads((commit_data_dir / "questions.json").read_text())
    profiles: dict[str, list[dict]] = {}
    for q in questions:
        profiles.setdefault(q["user_id"], q["profile"])
    preds, refs = [], []
    for items in profiles.values():
        for a, b in itertools.pairwise(items):
            preds.append(a["title"])
            refs.append(b["title"])
        for item in items[:20]:
            preds.append(item["title"])
            refs.append(item["text"])  # long references, often > 64 tokens
    return preds, refs


def test_tokenizer_matches_rouge_score_on_edge_cases() -> None:
    for a, b in EDGE_CASES:
        assert tokenize(a) == rs_tokenize.tokenize(a, None)
        assert tokenize(b) == rs_tokenize.tokenize(b, None)


def test_parity_on_real_commit_pairs(commit_data_dir) -> None:
    preds, refs = real_pairs(commit_data_dir)
    preds += [p for p, _ in EDGE_CASES]
    refs += [r for _, r in EDGE_CASES]
    assert len(preds) >= 1000
    assert max(len(tokenize(r)) for r in refs) > 64  # both LCS paths are exercised
    assert_parity(preds, refs)


def test_known_value_and_shapes() -> None:
    r1, rl = rouge_f1(["the cat sat", "dog"], ["The cat sat down.", "cat"])
    assert r1.shape == rl.shape == (2,)
    assert r1[0] == pytest.approx(2 * 1.0 * 0.75 / 1.75)
    assert r1[1] == 0.0 and rl[1] == 0.0
    assert rouge_f1([], [])[0].shape == (0,)


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="`preds` and `refs` must have the same length, got 2 and 1"):
        rouge_f1(["a", "b"], ["a"])
    with pytest.raises(TypeError, match=r"`refs\[1\]` must be a str, got NoneType"):
        rouge_f1(["a", "b"], ["a", None])  # type: ignore[list-item]


_WORDS = ["the", "The", "cat", "cat.", "fix", "[fix]", "bug", "İ", "ß", "🚀", "x1", "r63191", "---", "", "naïve"]
_word_lists = st.lists(st.sampled_from(_WORDS), max_size=80)
_separators = st.sampled_from([" ", "  ", "\n", "\t", "-", ", "])


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(_word_lists, _word_lists, _separators), min_size=1, max_size=12))
def test_parity_on_generated_word_soups(rows) -> None:
    preds = [sep.join(a) for a, _, sep in rows]
    refs = [sep.join(b) for _, b, sep in rows]
    assert_parity(preds, refs)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.text(max_size=120), st.text(max_size=120)), min_size=1, max_size=8))
def test_parity_on_arbitrary_unicode(rows) -> None:
    assert_parity([a for a, _ in rows], [b for _, b in rows])


def test_corpus_rouge_is_the_mean() -> None:
    preds, refs = ["a b c", "x y", ""], ["a b", "y z", "q"]
    r1, rl = rouge_f1(preds, refs)
    got = corpus_rouge(preds, refs)
    assert got == {"rouge-1": pytest.approx(r1.mean()), "rouge-L": pytest.approx(rl.mean()), "n": 3}


def test_score_candidates_fills_and_nulls_unknown_references() -> None:
    table = pa.table({
        "user_id": ["u1", "u1", "u2", "u3"],
        "query_id": ["q1", "q1", "q2", "q3"],
        "cand_idx": pa.array([0, 1, 0, 0], pa.int32()),
        "mode": ["eval"] * 4,
        "query_text": ["t"] * 4,
        "text": ["fix the bug", "unrelated words", "hello", "anything"],
        "num_tokens": pa.array([3, 2, 1, 1], pa.int32()),
        "logprob": pa.nulls(4, pa.float64()),
    })
    refs = {("u1", "q1"): "Fix the bug!", ("u2", "q2"): None}  # u3/q3 absent
    out = score_candidates(table, refs)
    assert out.schema == CANDIDATES
    r1 = out["rouge1"].to_pylist()
    assert r1[0] == 1.0 and r1[1] == 0.0
    assert r1[2] is None and r1[3] is None
    assert out["rougeL"].to_pylist()[0] == 1.0
    # existing columns are overwritten, not duplicated
    again = score_candidates(out, {("u2", "q2"): "hello"})
    assert again["rouge1"].to_pylist() == [None, None, 1.0, None]


def test_importing_scoring_keeps_ray_out() -> None:
    code = "import sys, ttp_ray.scoring, ttp_ray.data.simulated; print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
