"""Bi-encoder features of (user, query, candidate): cheap to score because the query and user parts are cached.

For a candidate c of query q by user u (e = L2-normalised embeddings, ĉ_u = normalised mean embedding of the
user's profile outputs, leave-one-out when q is itself a profile item):

    cand          e_c                         cos_query        cos(e_c, e_q)
    cand_x_query  e_c ⊙ e_q                   cos_user         cos(e_c, ĉ_u)
    cand_x_user   e_c ⊙ ĉ_u                   length           log(1 + #tokens(c))
    pair          h(q ⊕ c)  (cross-encoder)   len_ratio_user   log(1 + #tokens(c)) − log(1 + mean #tokens of u)
    pair_x_user   h(q ⊕ c) ⊙ ĉ_u              lex_query        share of c's tokens found in q
                                              lex_user         mean over c's tokens of the share of u's outputs
                                                               that contain it
                                              rouge_user       mean ROUGE-1 F1 of c against each of u's outputs
                                                               (MBR against the user's own history)
                                              qtf_sum          Σ over c's distinct tokens of tf_q(t) / max tf_q
                                              qtf_mean         qtf_sum / #tokens(c)  (salient query words)

Pool-aware blocks (`FeatureConfig.pool_blocks`, e.g. `consensus`) come last; they read the other candidates of
the request (`ttp_ray.reward.pool`), or the precomputed `FeatureRequest.pool` when a request holds only part of
a pool (a Ray Data batch boundary may split one).

Tokens are ROUGE's tokens (`ttp_ray.scoring.rouge.tokenize`), so length and overlap speak the golden score's
language. Only the candidate needs a backbone pass per request; query embeddings sit in an LRU cache and the
user part is a `UserContext` built once from the profile (and stored in checkpoints for serving). A spec made
only of text blocks (`STATIC_BLOCKS`) needs no backbone at all.
"""

from __future__ import annotations

import math
import threading
from collections import Counter, OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ttp_ray.reward.backbone import Backbone
from ttp_ray.reward.config import STATIC_BLOCKS, VECTOR_BLOCKS, FeatureConfig
from ttp_ray.reward.pool import pool_features
from ttp_ray.scoring.rouge import tokenize

__all__ = ["FeatureRequest", "Featurizer", "backbone_passes", "UserContext", "assemble", "feature_dim", "population_context"]

STATIC_SCALARS = STATIC_BLOCKS  # need no backbone pass


@dataclass
class _Item:
    emb: torch.Tensor  # (d,)
    n_tokens: int
    tokens: frozenset[str]


@dataclass
class UserContext:
    """What the features need to know about a user: sums over the profile outputs (+ items, for leave-one-out).

    `df` counts, for each token, the profile outputs containing it (fractional for the population context).
    """

    user_id: str
    emb_sum: torch.Tensor  # (d,) sum of normalised output embeddings
    n_items: float
    len_sum: float  # sum of output lengths in tokens
    df: dict[str, float]
    items: dict[str, _Item] = field(default_factory=dict)  # only while training (leave-one-out)
    # token counts of each profile output, by item id (kept for serving: `rouge_user` compares with each one)
    bags: dict[str, Counter[str]] = field(default_factory=dict)

    def _minus(self, exclude: str | None) -> tuple[torch.Tensor, float, float, _Item | None]:
        item = self.items.get(exclude) if exclude is not None else None
        if item is None:
            return self.emb_sum, self.n_items, self.len_sum, None
        return self.emb_sum - item.emb, self.n_items - 1, self.len_sum - item.n_tokens, item

    def centroid(self, exclude: str | None = None) -> torch.Tensor:
        """Unit-norm direction of the user's (other) outputs; zeros when there are none."""
        s, n, _, _ = self._minus(exclude)
        return F.normalize(s, dim=0) if n > 0 else torch.zeros_like(s)

    def mean_len(self, exclude: str | None = None) -> float:
        _, n, ln, _ = self._minus(exclude)
        return ln / n if n > 0 else 0.0

    def token_share(self, tokens: Sequence[str], exclude: str | None = None) -> float:
        """Mean over `tokens` of the share of the user's (other) outputs containing the token."""
        if not tokens:
            return 0.0
        _, n, _, item = self._minus(exclude)
        if n <= 0:
            return 0.0
        df = self.df
        drop = item.tokens if item is not None else frozenset()
        total = 0.0
        for t in tokens:
            total += df.get(t, 0.0) - (1.0 if t in drop else 0.0)
        return total / (n * len(tokens))

    def rouge_share(self, tokens: Sequence[str], exclude: str | None = None) -> float:
        """Mean ROUGE-1 F1 of a candidate (its ROUGE tokens) against each of the user's (other) outputs.

        The golden score compares a candidate with the one output the user will write; the user's past outputs
        are the best sample of that distribution we hold, so this is MBR against the user's own history (on the
        commit data it ranks pools better than consensus among the candidates: README, "Selection").
        F1 = 2·overlap / (|c| + |o|), rouge_score's `2pr/(p+r)` without the division by zero.
        """
        n_c = len(tokens)
        if n_c == 0:
            return 0.0
        cand = Counter(tokens)
        total, k = 0.0, 0
        for iid, bag in self.bags.items():
            if iid == exclude:
                continue
            k += 1
            n_o = bag.total()
            if n_o:
                overlap = sum(min(v, bag[t]) for t, v in cand.items() if t in bag)
                total += 2.0 * overlap / (n_c + n_o)
        return total / k if k else 0.0

    def without_items(self) -> UserContext:
        return UserContext(self.user_id, self.emb_sum, self.n_items, self.len_sum, self.df, bags=self.bags)


def population_context(contexts: Iterable[UserContext], max_tokens: int = 5000, max_bags: int = 1000) -> UserContext:
    """An 'average user' for users the model has never seen: mean centroid, mean length, mean token shares, and
    up to `max_bags` outputs taken round-robin over the users (in the order given) for `rouge_user`."""
    ctxs = [c for c in contexts if c.n_items > 0]
    if not ctxs:
        raise ValueError("population_context needs at least one user with a non-empty profile")
    cen = torch.stack([c.centroid() for c in ctxs]).mean(0)
    mean_len = float(np.mean([c.mean_len() for c in ctxs]))
    share: Counter[str] = Counter()
    for c in ctxs:
        for t, v in c.df.items():
            share[t] += v / c.n_items / len(ctxs)
    df = dict(share.most_common(max_tokens))
    bags: dict[str, Counter[str]] = {}
    queues = [list(c.bags.values()) for c in ctxs]
    for i in range(max((len(q) for q in queues), default=0)):
        for q in queues:
            if i < len(q) and len(bags) < max_bags:
                bags[str(len(bags))] = q[i]
    return UserContext("<population>", cen, 1.0, mean_len, df, bags=bags)


@dataclass
class FeatureRequest:
    """One query's candidates for one user. `exclude_item` = the profile item this pseudo-query came from;
    `pool` = (len(candidates), len(pool_blocks)) pool features computed over the whole pool (None: computed
    from `candidates`, which must then be the whole pool)."""

    context: UserContext
    query: str
    candidates: Sequence[str]
    exclude_item: str | None = None
    pool: np.ndarray | None = None


def backbone_passes(blocks: Sequence[str]) -> tuple[bool, bool, bool]:
    """Which backbone passes `blocks` read: (candidate alone, query alone, query ⊕ candidate). One rule for the
    cached features (`Featurizer`) and the tuned backbone's training batches (`GlobalModel.features`)."""
    bs = set(blocks)
    return (bool(bs & {"cand", "cand_x_query", "cand_x_user", "cos_query", "cos_user"}),
            bool(bs & {"cand_x_query", "cos_query"}), any(b.startswith("pair") for b in bs))


def needs_backbone(cfg: FeatureConfig) -> bool:
    return any(b not in STATIC_BLOCKS for b in cfg.resolved_blocks())


def feature_dim(cfg: FeatureConfig, embed_dim: int) -> int:
    blocks = cfg.resolved_blocks()
    return sum(embed_dim if b in VECTOR_BLOCKS else 1 for b in blocks) + len(cfg.pool_blocks)


def assemble(
    blocks: Sequence[str],
    *,
    cu: torch.Tensor,
    scalars: dict[str, torch.Tensor],
    e_c: torch.Tensor | None = None,
    e_q: torch.Tensor | None = None,
    h_pair: torch.Tensor | None = None,
) -> torch.Tensor:
    """Concatenate the feature blocks (all (N, ·) tensors; differentiable in e_c, e_q and h_pair)."""
    parts: list[torch.Tensor] = []
    for b in blocks:
        if b == "cand":
            parts.append(e_c)
        elif b == "cand_x_query":
            parts.append(e_c * e_q)
        elif b == "cand_x_user":
            parts.append(e_c * cu)
        elif b == "pair":
            parts.append(h_pair)
        elif b == "pair_x_user":
            parts.append(h_pair * cu)
        elif b == "cos_query":
            parts.append((e_c * e_q).sum(-1, keepdim=True))
        elif b == "cos_user":
            parts.append((e_c * cu).sum(-1, keepdim=True))
        else:
            parts.append(scalars[b].unsqueeze(-1))
    return torch.cat(parts, dim=-1)


class Featurizer:
    """Feature extraction around a frozen `Backbone`: contexts from profiles, features for candidate batches."""

    def __init__(self, backbone: Backbone | None, cfg: FeatureConfig) -> None:
        self.cfg = cfg
        self.blocks = cfg.resolved_blocks()
        if backbone is None and needs_backbone(cfg):
            raise ValueError(f"feature blocks {self.blocks} need a backbone; only {list(STATIC_BLOCKS)} do not")
        self.backbone = backbone
        self.embed_dim = backbone.dim if backbone is not None else 0
        self.dim = feature_dim(cfg, self.embed_dim)
        self._query_cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._lock = threading.Lock()
        self.needs_cand, self.needs_query, self.needs_pair = backbone_passes(self.blocks)

    @classmethod
    def from_config(cls, cfg: FeatureConfig, device: str = "cpu") -> Featurizer:
        """Load the backbone only when a block needs it."""
        backbone = (Backbone(cfg.backbone, pooling=cfg.pooling, device=device, dtype=cfg.dtype,
                             attn_implementation=cfg.attn_implementation) if needs_backbone(cfg) else None)
        return cls(backbone, cfg)

    # ---- user contexts --------------------------------------------------------------------------------------
    def build_contexts(
        self, user_ids: Sequence[str], item_ids: Sequence[str], outputs: Sequence[str], *, keep_items: bool = True,
        progress: bool = False,
    ) -> dict[str, UserContext]:
        """One context per user from their profile rows (one batched encode over all outputs)."""
        dim = self.embed_dim
        embs = (self._encode(list(outputs), self.cfg.max_cand_tokens, progress=progress, desc="profile outputs")
                if self.backbone is not None else torch.zeros(len(outputs), 0))
        ctxs: dict[str, UserContext] = {}
        for uid, iid, out, e in zip(user_ids, item_ids, outputs, embs, strict=True):
            ctx = ctxs.get(uid)
            if ctx is None:
                ctx = ctxs[uid] = UserContext(uid, torch.zeros(dim), 0.0, 0.0, {})
            toks = tokenize(out)
            tset = frozenset(toks)
            ctx.emb_sum = ctx.emb_sum + e
            ctx.n_items += 1
            ctx.len_sum += len(toks)
            for t in tset:
                ctx.df[t] = ctx.df.get(t, 0.0) + 1.0
            ctx.bags[str(iid)] = Counter(toks)
            if keep_items:
                ctx.items[str(iid)] = _Item(e, len(toks), tset)
        return ctxs

    # ---- features -------------------------------------------------------------------------------------------
    def _encode(self, texts: list[str], max_len: int, *, progress: bool = False, desc: str = "") -> torch.Tensor:
        """Embeddings of `texts`, each distinct text encoded once (sampled pools repeat candidates)."""
        uniq = list(dict.fromkeys(texts))
        if len(uniq) < len(texts):
            pos = {t: i for i, t in enumerate(uniq)}
            return self._encode(uniq, max_len, progress=progress, desc=desc)[[pos[t] for t in texts]]
        bs = self.cfg.encode_batch_size
        if not progress or len(texts) <= bs:
            return self.backbone.encode(texts, max_length=max_len, batch_size=bs)
        chunks = [texts[i : i + 16 * bs] for i in range(0, len(texts), 16 * bs)]
        return torch.cat([self.backbone.encode(c, max_length=max_len, batch_size=bs)
                          for c in tqdm(chunks, desc=f"encode {desc}", unit="chunk")])

    def _queries(self, queries: list[str]) -> torch.Tensor:
        """Query embeddings through the LRU cache (one batched encode for the misses)."""
        cache, size = self._query_cache, self.cfg.query_cache_size
        with self._lock:  # a Serve replica may call in from several threads
            hits = {q: cache[q] for q in dict.fromkeys(queries) if q in cache}
            for q in hits:
                cache.move_to_end(q)
        missing = [q for q in dict.fromkeys(queries) if q not in hits]
        fresh = dict(zip(missing, self._encode(missing, self.cfg.max_query_tokens), strict=True)) if missing else {}
        if size > 0 and fresh:
            with self._lock:
                cache.update(fresh)
                while len(cache) > size:
                    cache.popitem(last=False)
        known = hits | fresh
        return torch.stack([known[q] for q in queries])

    def static_parts(self, requests: Sequence[FeatureRequest]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Per-candidate parts that need no candidate/query backbone pass: ĉ_u rows and the static scalars."""
        cus, scal = [], {k: [] for k in STATIC_SCALARS}
        for r in requests:
            ctx, ex = r.context, r.exclude_item
            cu = ctx.centroid(ex)
            q_tf = Counter(tokenize(r.query))
            q_max = max(q_tf.values(), default=1)
            log_mean_len = math.log1p(ctx.mean_len(ex))
            for c in r.candidates:
                toks = tokenize(c)
                n = len(toks)
                cus.append(cu)
                scal["length"].append(math.log1p(n))
                scal["len_ratio_user"].append(math.log1p(n) - log_mean_len)
                scal["lex_query"].append(sum(t in q_tf for t in toks) / n if n else 0.0)
                qtf = sum(q_tf.get(t, 0) for t in set(toks)) / q_max
                scal["qtf_sum"].append(qtf)
                scal["qtf_mean"].append(qtf / n if n else 0.0)
                scal["lex_user"].append(ctx.token_share(toks, ex) if "lex_user" in self.blocks else 0.0)
                scal["rouge_user"].append(ctx.rouge_share(toks, ex) if "rouge_user" in self.blocks else 0.0)
        cu_t = torch.stack(cus) if cus else torch.zeros(0, self.embed_dim)
        return cu_t, {k: torch.tensor(v, dtype=torch.float32) for k, v in scal.items()}

    def features(self, requests: Sequence[FeatureRequest]) -> torch.Tensor:
        """(total candidates, dim) float32 features, candidates in request order (one backbone pass for all)."""
        cu, scalars = self.static_parts(requests)
        counts = [len(r.candidates) for r in requests]
        rep = torch.repeat_interleave(torch.arange(len(requests)), torch.tensor(counts, dtype=torch.long))
        cands = [c for r in requests for c in r.candidates]
        e_c = e_q = h_pair = None
        if self.needs_cand:
            e_c = self._encode(cands, self.cfg.max_cand_tokens)
        if self.needs_query:
            e_q = self._queries([r.query for r in requests])[rep] if requests else None
        if self.needs_pair:
            queries = [r.query for r in requests for _ in r.candidates]
            h_pair = self.backbone.encode(
                queries, pairs=cands, max_length=self.cfg.max_query_tokens + self.cfg.max_cand_tokens,
                batch_size=self.cfg.encode_batch_size,
            )
        if not cands:
            return torch.zeros(0, self.dim)
        x = (assemble(self.blocks, cu=cu, scalars=scalars, e_c=e_c, e_q=e_q, h_pair=h_pair) if self.blocks
             else torch.zeros(len(cands), 0))
        if not self.cfg.pool_blocks:
            return x
        return torch.cat([x, self.pool_columns(requests)], dim=1)

    def pool_columns(self, requests: Sequence[FeatureRequest]) -> torch.Tensor:
        """(total candidates, len(pool_blocks)) pool-aware columns, from `r.pool` or each request's candidates."""
        blocks = self.cfg.pool_blocks
        parts = []
        for r in requests:
            p = r.pool if r.pool is not None else pool_features(r.candidates, blocks)
            if np.shape(p) != (len(r.candidates), len(blocks)):
                raise ValueError(f"FeatureRequest.pool must have shape ({len(r.candidates)}, {len(blocks)}), "
                                 f"got {np.shape(p)}")
            parts.append(torch.tensor(np.asarray(p, dtype=np.float32)))
        return torch.cat(parts) if parts else torch.zeros(0, len(blocks))
