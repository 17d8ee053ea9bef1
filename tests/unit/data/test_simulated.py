"""`simulate_pools`: the CANDIDATES contract, determinism, golden scores and the quality knob."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ttp_ray.data.config import SyntheticConfig
from ttp_ray.data.lamp import load_lamp
from ttp_ray.data.schema import CANDIDATES
from ttp_ray.data.simulated import simulate_pools
from ttp_ray.data.synthetic import write_synthetic
from ttp_ray.errors import TTPValidationError
from ttp_ray.scoring.rouge import rouge_f1


@pytest.fixture(scope="module")
def commit(commit_data_dir: Path):
    return load_lamp(commit_data_dir / "questions.json", commit_data_dir / "outputs.json", name="commit")


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    paths = write_synthetic(SyntheticConfig(n_users=6, profile_size=12, queries_per_user=3),
                            tmp_path_factory.mktemp("syn"))
    return load_lamp(paths["questions"], paths["outputs"], name="syn")


def test_eval_pools_on_real_data(commit) -> None:
    t = simulate_pools(commit, mode="eval", n_candidates=8, seed=3)
    assert t.schema == CANDIDATES
    assert t.num_rows == 51 * 8
    assert set(t["mode"].to_pylist()) == {"eval"}
    df = t.to_pandas()
    assert (df.groupby(["user_id", "query_id"])["cand_idx"].apply(sorted) == [list(range(8))] * 51).all()
    assert (df["num_tokens"] == df["text"].str.split().str.len()).all() and df["logprob"].isna().all()
    # golden columns are exactly rouge_f1 against the query's reference
    refs = commit.references("eval")
    r1, rl = rouge_f1(df["text"].tolist(), [refs[(u, q)] for u, q in zip(df["user_id"], df["query_id"], strict=True)])
    np.testing.assert_array_equal(df["rouge1"].to_numpy(), r1)
    np.testing.assert_array_equal(df["rougeL"].to_numpy(), rl)
    # a useful spread for Best-of-N: oracle@8 well above the mean
    assert df.groupby("query_id")["rouge1"].max().mean() > df["rouge1"].mean() + 0.15


def test_rm_train_pools_use_the_latest_profile_items(commit) -> None:
    t = simulate_pools(commit, mode="rm_train", n_candidates=4, max_items_per_user=5)
    assert t.num_rows == 17 * 5 * 4 and set(t["mode"].to_pylist()) == {"rm_train"}
    latest = {}
    for r in commit.profile.select(["user_id", "item_id", "position"]).to_pylist():
        latest.setdefault(r["user_id"], []).append((r["position"], r["item_id"]))
    expected = {i for items in latest.values() for _, i in sorted(items)[-5:]}
    assert set(t["query_id"].to_pylist()) == expected
    inputs = dict(zip(commit.profile["item_id"].to_pylist(), commit.profile["input"].to_pylist(), strict=True))
    assert all(inputs[q] == text for q, text in zip(t["query_id"].to_pylist(), t["query_text"].to_pylist(), strict=True))


def test_deterministic_per_seed(small) -> None:
    a = simulate_pools(small, mode="eval", n_candidates=6, seed=5)
    b = simulate_pools(small, mode="eval", n_candidates=6, seed=5)
    c = simulate_pools(small, mode="eval", n_candidates=6, seed=6)
    assert a.equals(b)
    assert a["text"].to_pylist() != c["text"].to_pylist()


def test_quality_spread_widens_pools(small) -> None:
    def within_pool_std(spread: float) -> float:
        df = simulate_pools(small, mode="rm_train", n_candidates=16, quality_spread=spread).to_pandas()
        return float(df.groupby("query_id")["rouge1"].std().mean())

    assert within_pool_std(0.0) < within_pool_std(1.0)


def test_private_tokens_are_never_generated(tmp_path: Path) -> None:
    paths = write_synthetic(SyntheticConfig(n_users=4, profile_size=10, queries_per_user=2, collapse_frac=1.0),
                            tmp_path)
    ds = load_lamp(paths["questions"], paths["outputs"], name="syn")
    for mode in ("eval", "rm_train"):
        text = " ".join(simulate_pools(ds, mode=mode, n_candidates=8)["text"].to_pylist())
        assert not any(w.startswith("q") and w[-1].isdigit() for w in text.split())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_candidates": 0}, "`n_candidates` must be >= 1, got 0"),
        ({"mode": "train"}, "`mode` must be 'eval' or 'rm_train', got 'train'"),
        ({"quality_spread": 1.5}, r"`quality_spread` must be in \[0, 1\], got 1.5"),
        ({"max_items_per_user": 0}, "`max_items_per_user` must be >= 1 or None, got 0"),
    ],
)
def test_bad_arguments(small, kwargs, message) -> None:
    with pytest.raises(TTPValidationError, match=message):
        simulate_pools(small, **kwargs)
