"""Candidate generation: Ray Data streams queries through RAG prompt actors and engine actor pools.

`run_generation(run_dir, dataset, cfg, mode)` writes `{run_dir}/candidates/{dataset}/{mode}/part-*.parquet`
(CANDIDATES, exactly one row per (user_id, query_id, cand_idx)) and `errors.parquet`; it resumes after a crash.
"""

from ttp_ray.generation.config import ActorsConfig, GenerationConfig, RmTrainConfig
from ttp_ray.generation.pipeline import candidates_dir, run_generation
from ttp_ray.generation.store import ExactlyOnceError, read_candidates

__all__ = [
    "ActorsConfig",
    "ExactlyOnceError",
    "GenerationConfig",
    "RmTrainConfig",
    "candidates_dir",
    "read_candidates",
    "run_generation",
]
