"""A simulated policy: candidate pools without an LLM, for reward-model and evaluation tests and benchmarks.

Each candidate is a perturbation of the reference that a real policy could plausibly write: it keeps each
*reachable* reference word with a per-candidate probability (the quality knob), and mixes in article words,
the user's recurring style words and filler, which also varies its length. A word is reachable when the policy
could have seen it: it occurs in the query text or in another of the user's profile outputs (leave-one-out for
`rm_train` pseudo-queries). So fresh private tokens (the synthetic collapsed users) are never produced, and on
terse references extra words only cost precision — the failure modes come from the data, not from this code.
"""

from __future__ import annotations

import zlib
from collections import Counter
from typing import Literal

import numpy as np
import pyarrow as pa

from ttp_ray.data.dataset import LoadedDataset
from ttp_ray.data.schema import CANDIDATES
from ttp_ray.errors import TTPValidationError
from ttp_ray.scoring.rouge import rouge_f1, tokenize

__all__ = ["simulate_pools"]

_FILLER = ("the", "a", "of", "in", "new", "and", "update", "to", "for", "on")
_CENTER = 0.55  # mean keep-probability of reachable reference words
_EXTRA_RATE = 0.6  # extra words ~ Poisson(U(0, this x the user's median output length))
_MIN_WORDS = 2
_SALIENCE_BOOST = 0.5  # the most prominent query word is kept with probability keep_p + (1 - keep_p) * this
_GUESS_P = 0.8  # an unreachable reference word is replaced by a guess (keeps candidate length realistic)


def _pools(ds: LoadedDataset, mode: str, max_items: int | None) -> list[tuple[str, str, str, str]]:
    """`(user_id, query_id, query_text, reference)` per pool; pools without a reference are skipped."""
    if mode == "eval":
        rows = ds.queries.select(["user_id", "query_id", "query_text", "reference"]).to_pylist()
        rows = [r for r in rows if r["reference"] is not None]
        keep_latest = False
    else:  # rm_train: the user's profile items are pseudo-queries
        rows = [{"user_id": r["user_id"], "query_id": r["item_id"], "query_text": r["input"], "reference": r["output"]}
                for r in ds.profile.select(["user_id", "item_id", "input", "output"]).to_pylist()]
        keep_latest = True  # profiles are oldest first
    by_user: dict[str, list[dict]] = {}
    for r in rows:
        by_user.setdefault(r["user_id"], []).append(r)
    out = []
    for items in by_user.values():
        if max_items is not None:
            items = items[-max_items:] if keep_latest else items[:max_items]
        out += [(r["user_id"], r["query_id"], r["query_text"], r["reference"]) for r in items]
    return out


class _UserContext:
    """What the policy can see of one user: token document-frequencies and recurring words of its outputs."""

    def __init__(self, outputs: list[str]) -> None:
        self.df: Counter[str] = Counter()
        words: Counter[str] = Counter()
        for text in outputs:
            self.df.update(set(tokenize(text)))
            words.update(set(text.split()))
        self.style = sorted(w for w, c in words.items() if c >= 2)  # seen in >= 2 outputs: never a private token
        self.typical_len = float(np.median([len(t.split()) for t in outputs])) if outputs else 8.0

    def reachable(self, word: str, query_tokens: set[str], own: set[str] | None) -> bool:
        """A word is reachable if each of its tokens is in the query or in another profile output."""
        for tok in tokenize(word):
            if tok in query_tokens:
                continue
            if self.df[tok] - (1 if own is not None and tok in own else 0) <= 0:
                return False
        return True


def _distinct_words(text: str) -> list[str]:
    """The text's distinct words (by ROUGE token form, first spelling kept): stuffing draws word *types*."""
    seen: dict[tuple[str, ...], str] = {}
    for w in text.split():
        key = tuple(tokenize(w))
        if key:
            seen.setdefault(key, w)
    return list(seen.values())


def _salience(words: list[str], query_text: str) -> list[float]:
    """Per word, how prominent it is in the query (its most frequent token's count / the top count, 0..1)."""
    counts = Counter(tokenize(query_text))
    top = max(counts.values(), default=1)
    return [max((counts[t] for t in tokenize(w)), default=0) / top for w in words]


def _candidates(
    rng: np.random.Generator, ref_words: list[str], reachable: list[bool], salience: list[float],
    query_words: list[str], style: list[str], typical_len: float, n: int, spread: float,
) -> list[str]:
    """`n` candidates: kept reference words, guesses for unreachable ones, plus extra words.

    A reachable reference word is kept with the candidate's keep-probability, raised for words prominent in
    the query (any policy copies an article's key words). Extra words are about as many as the user's
    *typical* output length suggests, not this reference's: a policy does not know that a query wants a
    terse answer, which is what makes short-reference queries hackable.
    """
    lo, hi = max(0.0, _CENTER - spread / 2), min(1.0, _CENTER + spread / 2)
    guesses = query_words + style
    out = []
    for _ in range(n):
        keep_p = rng.uniform(lo, hi)
        words = []
        for w, ok, sal in zip(ref_words, reachable, salience, strict=True):
            if ok:
                if rng.random() < keep_p + (1.0 - keep_p) * _SALIENCE_BOOST * sal:
                    words.append(w)
            elif guesses and rng.random() < _GUESS_P:  # the policy writes something here, but not this word
                words.append(guesses[int(rng.integers(0, len(guesses)))])
        n_extra = int(rng.poisson(rng.uniform(0.0, _EXTRA_RATE * typical_len)))
        for _ in range(max(n_extra, _MIN_WORDS - len(words))):  # article words (keyword stuffing), style, filler
            r = rng.random()
            pool = query_words if r < 0.6 and query_words else style if r < 0.85 and style else _FILLER
            words.insert(int(rng.integers(0, len(words) + 1)), str(pool[int(rng.integers(0, len(pool)))]))
        out.append(" ".join(words))
    return out


def simulate_pools(
    ds: LoadedDataset,
    *,
    mode: Literal["eval", "rm_train"] = "eval",
    n_candidates: int = 16,
    max_items_per_user: int | None = None,
    quality_spread: float = 0.8,
    seed: int = 0,
) -> pa.Table:
    """Candidate pools with golden ROUGE filled, in the CANDIDATES schema (`logprob` is null).

    Args:
        ds: the dataset.
        mode: "eval" pools the test queries that have a reference; "rm_train" pools the profile items as
            pseudo-queries (`query_id` = item id, reference = the item's output).
        n_candidates: candidates per pool (N).
        max_items_per_user: cap pools per user (eval: first k queries; rm_train: latest k items).
        quality_spread: width of the per-candidate keep-probability interval around 0.55 (0 = all candidates
            of a pool equally good in expectation, 1 = from useless to near-copy of the reference).
        seed: pools are deterministic per (seed, mode, user, query), whatever the dataset order.

    Example:
        >>> pools = simulate_pools(ds, mode="rm_train", n_candidates=8, max_items_per_user=10)  # doctest: +SKIP
    """
    if mode not in ("eval", "rm_train"):
        raise TTPValidationError(f"`mode` must be 'eval' or 'rm_train', got {mode!r}", parameter="mode", value=mode)
    if n_candidates < 1:
        raise TTPValidationError(f"`n_candidates` must be >= 1, got {n_candidates}", parameter="n_candidates",
                                 value=n_candidates)
    if not 0.0 <= quality_spread <= 1.0:
        raise TTPValidationError(f"`quality_spread` must be in [0, 1], got {quality_spread}",
                                 parameter="quality_spread", value=quality_spread)
    if max_items_per_user is not None and max_items_per_user < 1:
        raise TTPValidationError(f"`max_items_per_user` must be >= 1 or None, got {max_items_per_user}",
                                 parameter="max_items_per_user", value=max_items_per_user)
    outputs: dict[str, list[str]] = {}
    for u, o in zip(ds.profile["user_id"].to_pylist(), ds.profile["output"].to_pylist(), strict=True):
        outputs.setdefault(u, []).append(o)
    contexts: dict[str, _UserContext] = {}
    cols: dict[str, list] = {k: [] for k in ("user_id", "query_id", "cand_idx", "query_text", "text", "ref")}
    for user_id, query_id, query_text, reference in _pools(ds, mode, max_items_per_user):
        ctx = contexts.get(user_id) or contexts.setdefault(user_id, _UserContext(outputs.get(user_id, [])))
        rng = np.random.default_rng([seed, zlib.crc32(f"{mode}\x1f{user_id}\x1f{query_id}".encode())])
        query_tokens = set(tokenize(query_text))
        own = set(tokenize(reference)) if mode == "rm_train" else None
        ref_words = reference.split()
        reachable = [ctx.reachable(w, query_tokens, own) for w in ref_words]
        query_words = _distinct_words(query_text)
        texts = _candidates(rng, ref_words, reachable, _salience(ref_words, query_text), query_words, ctx.style,
                            ctx.typical_len, n_candidates, quality_spread)
        cols["user_id"] += [user_id] * n_candidates
        cols["query_id"] += [query_id] * n_candidates
        cols["cand_idx"] += list(range(n_candidates))
        cols["query_text"] += [query_text] * n_candidates
        cols["text"] += texts
        cols["ref"] += [reference] * n_candidates
    rouge1, rougel = rouge_f1(cols["text"], cols["ref"])
    n = len(cols["text"])
    return pa.table(
        {
            "user_id": cols["user_id"],
            "query_id": cols["query_id"],
            "cand_idx": pa.array(cols["cand_idx"], pa.int32()),
            "mode": [mode] * n,
            "query_text": cols["query_text"],
            "text": cols["text"],
            "num_tokens": pa.array([len(t.split()) for t in cols["text"]], pa.int32()),
            "logprob": pa.nulls(n, pa.float64()),
            "rouge1": pa.array(rouge1, pa.float64()),
            "rougeL": pa.array(rougel, pa.float64()),
        },
        schema=CANDIDATES,
    )
