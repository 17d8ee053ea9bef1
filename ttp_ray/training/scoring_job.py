"""Batched scoring of candidate tables with every trained variant → the SCORES table.

`score_table` is the in-process core (one feature pass per backbone, then every variant's head on the same
features); `run_scoring_job` streams eval candidate Parquet files through a Ray Data actor pool whose actors
hold the encoder and all variants, and writes `{run_dir}/scores/{dataset}/scores.parquet`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ttp_ray.data.schema import SCORES
from ttp_ray.errors import DataError
from ttp_ray.reward.features import FeatureRequest, Featurizer
from ttp_ray.reward.scorer import RewardScorer, resolve_variant_dir
from ttp_ray.training.features_job import pool_matrix, read_pool_parts

__all__ = ["ScoreUDF", "load_scorers", "run_scoring_job", "score_table"]

log = logging.getLogger(__name__)

_NEEDED = ["user_id", "query_id", "cand_idx", "query_text", "text"]


def load_scorers(rm_dir: str | Path, variants: Sequence[str], device: str = "cpu") -> list[RewardScorer]:
    """Load `variants`; variants with the same frozen feature spec share one featurizer (one backbone)."""
    scorers: list[RewardScorer] = []
    shared: dict[str, Featurizer] = {}
    for v in variants:
        d = resolve_variant_dir(rm_dir, v)
        manifest = json.loads((d / "manifest.json").read_text())
        key = None if manifest.get("backbone_tuned") else json.dumps(manifest["feature_spec"], sort_keys=True)
        s = RewardScorer.from_checkpoint(d, v, device, featurizer=shared.get(key) if key else None)
        if key and key not in shared:
            shared[key] = s.featurizer
        scorers.append(s)
    return scorers


def score_table(scorers: Sequence[RewardScorer], candidates: pa.Table) -> pa.Table:
    """SCORES rows (one per candidate and variant) for a CANDIDATES-like table."""
    missing = [c for c in _NEEDED if c not in candidates.column_names]
    if missing:
        raise DataError(f"candidate table lacks columns {missing}", file="<candidates>")
    users = candidates["user_id"].to_pylist()
    queries = candidates["query_id"].to_pylist()
    qtext = candidates["query_text"].to_pylist()
    texts = candidates["text"].to_pylist()
    n = len(users)
    pool = pool_matrix(candidates)
    parts: list[pa.Table] = []
    feats: dict[int, np.ndarray] = {}
    for sc in scorers:
        key = id(sc.featurizer)
        if key not in feats:
            reqs, i = [], 0
            while i < n:
                j = i
                while j < n and users[j] == users[i] and queries[j] == queries[i]:
                    j += 1
                ctx = sc.ckpt.contexts.get(users[i], sc.ckpt.population)
                reqs.append(FeatureRequest(ctx, qtext[i], texts[i:j], pool=pool[i:j] if pool is not None else None))
                i = j
            feats[key] = sc.featurizer.features(reqs)
        mu, sigma = sc.score_features(feats[key], users)
        slope = sc.pool_slope(feats[key], users)
        fallback = [u not in sc.known_users for u in users]
        parts.append(pa.table({
            "user_id": candidates["user_id"],
            "query_id": candidates["query_id"],
            "cand_idx": candidates["cand_idx"],
            "method": pa.array([sc.method] * n, pa.string()),
            "mu": pa.array(mu, pa.float64()),
            "sigma": pa.array(sigma, pa.float64()) if sigma is not None else pa.nulls(n, pa.float64()),
            "fallback": pa.array(fallback, pa.bool_()),
            "pool_weight": pa.array(slope, pa.float64()) if slope is not None else pa.nulls(n, pa.float64()),
        }, schema=SCORES))
    return pa.concat_tables(parts) if parts else SCORES.empty_table()


class ScoreUDF:
    """Ray Data callable: loads the variants once per actor, scores each batch of candidates."""

    def __init__(self, rm_dir: str, variants: list[str], device: str = "cpu") -> None:
        self.scorers = load_scorers(rm_dir, variants, device)

    def __call__(self, batch: pa.Table) -> pa.Table:
        return score_table(self.scorers, batch)


def pool_blocks(rm_dir: str | Path, variants: Sequence[str]) -> list[str]:
    """The pool-aware blocks the variants read (they share one feature spec per run); [] when none."""
    blocks: list[str] = []
    for v in variants:
        spec = json.loads((resolve_variant_dir(rm_dir, v) / "manifest.json").read_text())["feature_spec"]
        blocks = blocks or list(spec["config"].get("pool_blocks", []))
    return blocks


def run_scoring_job(
    candidates_dir: str | Path,
    rm_dir: str | Path,
    out_path: str | Path,
    variants: Sequence[str],
    *,
    num_actors: int = 1,
    batch_size: int = 1024,
    num_cpus_per_actor: float = 1.0,
    num_gpus_per_actor: float = 0.0,
) -> Path:
    """Score every `part-*.parquet` under `candidates_dir` with `variants` into one SCORES Parquet file."""
    import ray
    from ray.data import ActorPoolStrategy

    out = Path(out_path)
    files = sorted(str(p) for p in Path(candidates_dir).glob("part-*.parquet"))
    if not files:
        raise DataError("no part-*.parquet candidate files", file=str(candidates_dir))
    ds = read_pool_parts(files, _NEEDED, pool_blocks(rm_dir, variants)).map_batches(
        ScoreUDF,
        fn_constructor_kwargs={"rm_dir": str(rm_dir), "variants": list(variants),
                               "device": "cuda" if num_gpus_per_actor > 0 else "cpu"},
        batch_size=batch_size,
        batch_format="pyarrow",
        compute=ActorPoolStrategy(size=num_actors),
        num_cpus=num_cpus_per_actor,
        num_gpus=num_gpus_per_actor or None,
    )
    tables = [ray.get(ref) for ref in ds.to_arrow_refs()]
    table = pa.concat_tables([t.cast(SCORES) for t in tables]) if tables else SCORES.empty_table()
    table = table.sort_by([("method", "ascending"), ("user_id", "ascending"), ("query_id", "ascending"),
                           ("cand_idx", "ascending")])
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    pq.write_table(table, tmp)
    tmp.rename(out)
    log.info("wrote %d score rows to %s", table.num_rows, out)
    return out
