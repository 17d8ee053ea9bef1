"""Retrieval: BM25 and dense top-k over one user's profile, ties, leave-one-out."""

from __future__ import annotations

import numpy as np
import pyarrow.compute as pc
import pytest

from ttp_ray.policy.config import PolicyConfig, RetrievalConfig
from ttp_ray.policy.rag import RagPolicy
from ttp_ray.policy.retrieval import BM25Index, rank_top_k


def test_rank_top_k_orders_by_score_then_recency_and_excludes() -> None:
    scores = np.array([1.0, 3.0, 3.0, 0.5, 2.0])
    assert rank_top_k(scores, 3) == [2, 1, 4]  # tie 1/2 -> the later (more recent) item first
    assert rank_top_k(scores, 3, exclude=2) == [1, 4, 0]
    assert rank_top_k(scores, 10, exclude=0) == [2, 1, 4, 3]
    assert rank_top_k(scores, 0) == []
    assert rank_top_k(np.zeros(3), 2) == [2, 1]  # no overlap at all: the latest items


def test_bm25_finds_the_matching_document() -> None:
    docs = ["fix flaky test on windows", "add ruff rule for imports", "update changelog for release 8.1"]
    index = BM25Index(docs)
    assert index.top_k("ruff imports", 1) == [1]
    assert index.top_k("changelog release", 2)[0] == 2
    # LaMP's whitespace tokens keep case: "Ruff" does not match "ruff"; bm25s word tokens do.
    assert index.scores("Ruff")[1] == 0.0
    assert BM25Index(docs, tokenizer="words").top_k("Ruff", 1) == [1]


def test_bm25_handles_empty_profiles_and_unknown_words() -> None:
    assert BM25Index([]).top_k("anything", 4) == []
    assert BM25Index(["a b", "c d"]).top_k("zzz", 1) == [1]


def test_leave_one_out_never_returns_the_item_itself(commit_profile, tokenizer) -> None:
    policy = RagPolicy(commit_profile, PolicyConfig(retrieval=RetrievalConfig(k=4)), tokenizer)
    user = commit_profile["user_id"][0].as_py()
    rows = commit_profile.filter(pc.equal(commit_profile["user_id"], user)).to_pylist()
    for item in rows[-10:]:  # an item queried with its own text is its own best match...
        top = policy.retrieve(user, item["input"])
        assert len(top) == 4
        assert item["item_id"] in [ex.item_id for ex in top]
        # ...and leave-one-out removes exactly it
        loo = policy.retrieve(user, item["input"], exclude_item_id=item["item_id"])
        assert len(loo) == 4
        assert item["item_id"] not in [ex.item_id for ex in loo]


def test_retrieval_stays_within_the_user(commit_profile, tokenizer) -> None:
    policy = RagPolicy(commit_profile, PolicyConfig(), tokenizer)
    users = policy.users
    assert len(users) == 17
    for user in users[:5]:
        own = set(commit_profile.filter(pc.equal(commit_profile["user_id"], user))["item_id"].to_pylist())
        got = policy.retrieve(user, "Files: src/_pytest/python.py Description: fix fixture")
        assert got and {ex.item_id for ex in got} <= own
    assert policy.retrieve("no-such-user", "anything") == []


@pytest.mark.parametrize("k", [0, 1, 7])
def test_k_is_honoured(commit_profile, tokenizer, k: int) -> None:
    policy = RagPolicy(commit_profile, PolicyConfig(retrieval=RetrievalConfig(k=k)), tokenizer)
    assert len(policy.retrieve(policy.users[0], "Files: testing/test_python.py")) == k


def test_dense_retrieval_ranks_the_paraphrase_first(tokenizer) -> None:
    import pyarrow as pa

    profile = pa.Table.from_pylist([
        {"user_id": "u", "item_id": str(i), "input": text, "output": "", "date": None, "position": i}
        for i, text in enumerate(["The cat sat on the mat.", "Quarterly revenue grew by ten percent.",
                                  "A storm is expected this weekend."])])
    cfg = PolicyConfig(retrieval=RetrievalConfig(method="dense", k=1))
    policy = RagPolicy(profile, cfg, tokenizer)
    assert [ex.item_id for ex in policy.retrieve("u", "Sales increased 10% this quarter")] == ["1"]
    assert [ex.item_id for ex in policy.retrieve("u", "heavy rain on Saturday")] == ["2"]
