"""The synthetic benchmark: determinism, LaMP compatibility, and that each knob does what it claims."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ttp_ray.data.config import SyntheticConfig
from ttp_ray.data.lamp import load_lamp
from ttp_ray.data.simulated import simulate_pools
from ttp_ray.data.synthetic import run_synth, write_synthetic
from ttp_ray.scoring.rouge import tokenize

FILES = ("questions.json", "outputs.json", "meta.json")


def load(cfg: SyntheticConfig, out: Path):
    paths = write_synthetic(cfg, out)
    ds = load_lamp(paths["questions"], paths["outputs"], name="syn")
    return ds, json.loads(paths["meta"].read_text())


@pytest.fixture(scope="module")
def default(tmp_path_factory):
    return load(SyntheticConfig(), tmp_path_factory.mktemp("syn"))


def test_same_seed_byte_identical_other_seed_differs(tmp_path: Path) -> None:
    cfg = SyntheticConfig(n_users=6, profile_size=8, queries_per_user=2, seed=7)
    write_synthetic(cfg, tmp_path / "a")
    write_synthetic(cfg, tmp_path / "b")
    write_synthetic(cfg.model_copy(update={"seed": 8}), tmp_path / "c")
    for name in FILES:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    for name in ("questions.json", "outputs.json"):
        assert (tmp_path / "a" / name).read_bytes() != (tmp_path / "c" / name).read_bytes(), name


def test_loads_as_lamp_time_split(default, capsys, tmp_path: Path) -> None:
    ds, meta = default
    s = ds.summary()
    assert (s["task"], s["n_users"], s["n_profile_items"], s["n_queries"], s["n_queries_with_reference"],
            s["n_errors"]) == ("synthetic_headline", 24, 24 * 40, 96, 96, 0)
    lengths = [len(t.split()) for t in ds.queries["query_text"].to_pylist()]
    assert min(lengths) >= 28 and max(lengths) <= 60  # short enough to prompt a small LLM with
    assert len(meta["collapse_users"]) == 6  # round(0.25 * 24)
    assert len(meta["hack_queries"]) == round(0.25 * 18 * 4)  # of the non-collapsed users' queries
    summary = run_synth(SyntheticConfig(n_users=3, profile_size=4, queries_per_user=1), tmp_path)
    assert summary["n_queries"] == 3 and "users: 3" in capsys.readouterr().out


def test_references_encode_styles_and_knobs(default) -> None:
    ds, meta = default
    users = {u["user_id"]: u for u in meta["users"]}
    collapse, hack = set(meta["collapse_users"]), set(meta["hack_queries"])
    corpus = Counter(tok for text in ds.profile["input"].to_pylist() + ds.queries["query_text"].to_pylist()
                     + ds.profile["output"].to_pylist() + ds.queries["reference"].to_pylist()
                     for tok in tokenize(text))
    for q in ds.queries.to_pylist():
        ref, article = q["reference"], set(tokenize(q["query_text"]))
        toks = tokenize(ref)
        if q["user_id"] in collapse:
            reachable = [t for t in toks if t in article]
            private = [t for t in toks if corpus[t] == 1]  # appears nowhere else in the benchmark
            assert 1 <= len(reachable) <= 2 and len(private) >= 7 and len(reachable) + len(private) == len(toks)
        elif q["query_id"] in hack:
            assert 1 <= len(toks) <= 2 and set(toks) <= article
        else:
            assert ref.startswith(users[q["user_id"]]["marker"] + " ")
            assert any(w in ref.split() for w in users[q["user_id"]]["favourites"])


def per_query_corr(df: pd.DataFrame) -> pd.Series:
    def corr(g: pd.DataFrame) -> float:
        if g["num_tokens"].std() == 0 or g["rouge1"].std() == 0:
            return np.nan
        return float(np.corrcoef(g["num_tokens"], g["rouge1"])[0, 1])

    return df.groupby("query_id")[["num_tokens", "rouge1"]].apply(corr)


@pytest.mark.parametrize("mode", ["eval", "rm_train"])
def test_knobs_show_up_in_simulated_pools(default, mode: str) -> None:
    ds, meta = default
    df = simulate_pools(ds, mode=mode, n_candidates=16, max_items_per_user=12, seed=1).to_pandas()
    collapse = df["user_id"].isin(meta["collapse_users"])
    # collapse_frac: those users' golden scores cluster near zero with a small but non-zero spread
    std = df.groupby("user_id")["rouge1"].std()
    is_collapse = std.index.isin(meta["collapse_users"])
    assert std[is_collapse].mean() < 0.5 * std[~is_collapse].mean()
    assert std[is_collapse].min() > 0.0
    assert df.loc[collapse, "rouge1"].mean() < 0.2 < df.loc[~collapse, "rouge1"].mean()
    # hack_frac: length anti-correlates with quality on hack-prone queries, correlates on the others
    normal = df[~collapse]
    corr = per_query_corr(normal)
    hack = corr.index.isin(meta["hack_queries"] + meta["hack_items"])
    assert hack.sum() > 0
    assert corr[hack].mean() < -0.2
    assert corr[~hack].mean() > 0.2


def test_knobs_at_zero_remove_the_failure_modes(tmp_path: Path) -> None:
    cfg = SyntheticConfig(n_users=8, profile_size=10, queries_per_user=3, collapse_frac=0.0, hack_frac=0.0)
    ds, meta = load(cfg, tmp_path)
    assert meta["collapse_users"] == [] and meta["hack_queries"] == [] and meta["hack_items"] == []
    df = simulate_pools(ds, mode="eval", n_candidates=16).to_pandas()
    assert (per_query_corr(df).dropna() < 0).mean() < 0.2
    assert df.groupby("user_id")["rouge1"].std().min() > 0.12
