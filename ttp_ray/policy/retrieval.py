"""Per-user retrieval over a profile: BM25 (bm25s, LaMP's whitespace tokens by default) or dense MiniLM.

An index covers ONE user's profile (tens to hundreds of items), so scoring every item and taking the top-k
is cheaper than any approximate search. `exclude` supports leave-one-out: a profile item used as a
pseudo-query (RM training data) must never appear in its own context.

`bm25s` (which loads numba) and `sentence_transformers` are imported lazily: numba at the top of a module
that a vLLM engine worker re-imports kills the CPU engine at start (measured here).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, Protocol

import numpy as np

__all__ = ["BM25Index", "DenseEncoder", "DenseIndex", "Index", "bm25_tokens", "rank_top_k"]


class Index(Protocol):
    """Ranks the documents of one user's profile for a query."""

    def top_k(self, query: str, k: int, *, exclude: int | None = None) -> list[int]:
        """Indices of the `k` best documents, best first, never `exclude`."""
        ...


def rank_top_k(scores: np.ndarray, k: int, *, exclude: int | None = None) -> list[int]:
    """Top-`k` indices by score, best first; ties go to the later (more recent) document.

    Profiles are stored oldest first, so among equally relevant items the most recent wins; with no
    overlap at all (every score 0) this degrades to "the k latest items".
    """
    n = len(scores)
    if k <= 0 or n == 0:
        return []
    order = np.lexsort((-np.arange(n), -np.asarray(scores, dtype=np.float64)))  # score desc, then position desc
    return [int(i) for i in order if i != exclude][:k]


def bm25_tokens(texts: Sequence[str], tokenizer: Literal["whitespace", "words"]) -> list[list[str]]:
    """Tokens for BM25: LaMP's `text.split()` (case kept) or bm25s' lowercase words without stop words."""
    if tokenizer == "whitespace":
        return [t.split() for t in texts]
    import bm25s

    return bm25s.tokenize(list(texts), return_ids=False, show_progress=False)


class BM25Index:
    """BM25 (bm25s, Lucene variant, k1=1.5, b=0.75) over one user's documents."""

    def __init__(self, docs: Sequence[str], *, tokenizer: Literal["whitespace", "words"] = "whitespace") -> None:
        import bm25s

        self.n = len(docs)
        self.tokenizer = tokenizer
        self._bm25 = bm25s.BM25()
        if self.n:
            self._bm25.index(bm25_tokens(docs, tokenizer), show_progress=False)

    def scores(self, query: str) -> np.ndarray:
        if not self.n:
            return np.zeros(0)
        return np.asarray(self._bm25.get_scores(bm25_tokens([query], self.tokenizer)[0]))

    def top_k(self, query: str, k: int, *, exclude: int | None = None) -> list[int]:
        return rank_top_k(self.scores(query), k, exclude=exclude)


class DenseEncoder:
    """Sentence encoder (sentence-transformers) returning L2-normalised float32 embeddings."""

    def __init__(self, model: str, *, device: str | None = None) -> None:
        from sentence_transformers import SentenceTransformer

        from ttp_ray.models import resolve_model

        self._model: Any = SentenceTransformer(resolve_model(model), device=device or "cpu")

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, 1), dtype=np.float32)
        emb = self._model.encode(list(texts), batch_size=64, normalize_embeddings=True, show_progress_bar=False)
        return np.asarray(emb, dtype=np.float32)


class DenseIndex:
    """Cosine similarity between the query embedding and one user's document embeddings."""

    def __init__(self, docs: Sequence[str], encoder: DenseEncoder) -> None:
        self.encoder = encoder
        self.n = len(docs)
        self._emb = encoder.encode(docs)

    def scores(self, query: str) -> np.ndarray:
        if not self.n:
            return np.zeros(0)
        return self._emb @ self.encoder.encode([query])[0]

    def top_k(self, query: str, k: int, *, exclude: int | None = None) -> list[int]:
        return rank_top_k(self.scores(query), k, exclude=exclude)
