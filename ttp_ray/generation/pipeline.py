"""`run_generation`: stream queries through RAG prompt actors and engine actor pools into candidate pools.

    pending queries (Parquet)
      -> map_batches(PromptStage,    ActorPoolStrategy(prompt_pool_size))          retrieval + template
      -> map_batches(CandidateStage, ActorPoolStrategy(pool_size), num_gpus, ...)  n samples, ROUGE, atomic part
      -> per-query summary rows -> driver: progress bar, errors.parquet, exactly-once validation

Not `ray.data.llm`: its vLLM stage keeps only the first of `n` outputs (ray-project/ray#53396).
Nothing holds all queries in memory: the plan is streamed from Parquet, candidates go straight from the engine
actor to disk, and the driver only counts. A rerun skips the queries whose part is committed (see `store`).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from tqdm.auto import tqdm

from ttp_ray.config import dump_resolved
from ttp_ray.errors import TTPValidationError
from ttp_ray.generation import plan, store
from ttp_ray.generation.config import GenerationConfig, Mode

log = logging.getLogger(__name__)

__all__ = ["candidates_dir", "run_generation"]

PENDING = "_pending.parquet"
_MAX_INPUT_BLOCKS = 2000
SUMMARY_FILE = "_summary.json"


def candidates_dir(run_dir: str | Path, dataset: str, mode: Mode) -> Path:
    """`{run_dir}/candidates/{dataset}/{mode}` (the part files, errors.parquet and the manifest)."""
    return Path(run_dir) / "candidates" / dataset / mode


def run_generation(
    run_dir: str | Path,
    dataset: str,
    cfg: GenerationConfig,
    mode: Mode = "eval",
    *,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Generate (or finish generating) the candidate pools of `dataset` in `mode`.

    Args:
        run_dir: the run directory; reads `data/{dataset}/{queries,profile}.parquet`, writes
            `candidates/{dataset}/{mode}/`.
        dataset: dataset name (as written by the data stage).
        cfg: the generation config.
        mode: `eval` (test queries, `n_candidates` each) or `rm_train` (profile items as pseudo-queries).
        overwrite: discard existing pools of this mode instead of resuming them.
        progress: show a progress bar.

    Returns:
        A summary: planned/skipped/generated queries, candidates, tokens, errors, throughput.

    Raises:
        TTPValidationError: bad `mode`, or existing pools made with other settings (without `overwrite`).
        DataError: the data stage's files are missing or unreadable.
        ExactlyOnceError: the stored pools are not exactly one row per (user, query, cand_idx).
    """
    if mode not in ("eval", "rm_train"):
        raise TTPValidationError(f"`mode` must be 'eval' or 'rm_train', got {mode!r}", parameter="mode", value=mode)
    data_dir = Path(run_dir) / "data" / dataset
    out_dir = candidates_dir(run_dir, dataset, mode)
    n = cfg.n_for(mode)
    k_items = cfg.rm_train.items_per_user
    epoch = store.begin_run(out_dir, cfg.fingerprint(mode), overwrite=overwrite)
    dump_resolved(cfg, out_dir, "_config.resolved.yaml")
    t0 = time.perf_counter()
    done = store.done_keys(out_dir)
    pending_path = out_dir / PENDING
    planned, pending = plan.write_pending(mode, data_dir, done, pending_path, k_items,
                                          row_group_size=cfg.actors.batch_size)
    log.info("generation %s/%s: %d queries planned, %d already stored, %d to generate (n=%d)",
             dataset, mode, planned, planned - pending, pending, n)
    stats = _Stats()
    if pending:
        ds = _build_dataset(cfg, data_dir, out_dir, pending_path, mode, n, epoch)
        _consume(ds, stats, pending, progress)
    pending_path.unlink(missing_ok=True)
    error_rows = [{"stage": "generate", "file": str(data_dir / ("queries.parquet" if mode == "eval"
                                                                   else "profile.parquet")),
                   "record_id": e["query_id"], "field": e["error_field"], "reason": e["error"]}
                  for e in stats.errors]
    store.write_errors(out_dir, error_rows)
    counts = store.validate_output(out_dir, plan.iter_keys(mode, data_dir, k_items),
                                   ((e["user_id"], e["query_id"]) for e in stats.errors), n)
    summary = stats.summary(dataset=dataset, mode=mode, n=n, planned=planned, skipped=planned - pending,
                            stored=counts, wall_s=time.perf_counter() - t0, out_dir=out_dir)
    (out_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=1) + "\n")
    log.info("generation summary: %s", json.dumps(summary))
    return summary


def _build_dataset(cfg: GenerationConfig, data_dir: Path, out_dir: Path, pending_path: Path, mode: Mode, n: int,
                   epoch: int) -> Any:
    import ray

    from ttp_ray.generation.stages import CandidateStage, PromptStage
    from ttp_ray.ray_utils import init_ray

    if not ray.is_initialized():
        init_ray()  # an entrypoint normally did this; never start a bare cluster without the worker env
    a = cfg.actors
    n_groups = pq.ParquetFile(pending_path).num_row_groups  # one row group = one engine batch (see write_pending)
    ds = ray.data.from_items([{"row_group": i} for i in range(n_groups)],
                             override_num_blocks=min(n_groups, _MAX_INPUT_BLOCKS))
    ds = ds.map_batches(
        PromptStage,
        fn_constructor_kwargs={"pending_path": str(pending_path), "profile_path": str(data_dir / "profile.parquet"),
                               "policy": cfg.policy.model_dump(), "model": cfg.engine.model,
                               "profile_in_memory_mb": a.profile_in_memory_mb},
        compute=ray.data.ActorPoolStrategy(size=a.prompt_pool_size),
        num_cpus=a.prompt_num_cpus,
        batch_size=1,  # one row group per call: one output block = one engine batch = one part
        batch_format="pyarrow",
    )
    return ds.map_batches(
        CandidateStage,
        fn_constructor_kwargs={"engine": cfg.engine.model_dump(), "n": n, "mode": mode,
                               "out_dir": str(out_dir), "epoch": epoch},
        compute=ray.data.ActorPoolStrategy(size=a.pool_size),
        num_gpus=a.num_gpus,
        num_cpus=a.num_cpus,
        batch_size=a.batch_size,
        batch_format="pyarrow",
    )


class _Stats:
    """Driver-side counters over the summary stream (errors are the only rows kept)."""

    def __init__(self) -> None:
        self.queries = self.candidates = self.tokens = self.prompt_tokens = 0
        self.engine_s = self.cpu_s = 0.0
        self.errors: list[dict[str, Any]] = []
        self.t_start = time.perf_counter()
        self.t_last = self.t_start
        self.commits: dict[float, tuple[int, int]] = {}  # engine batch commit time -> (candidates, tokens)

    def add(self, batch: Any) -> None:
        self.t_last = time.perf_counter()
        for done_at, cands, toks in zip(batch["done_at"].to_pylist(), batch["n_candidates"].to_pylist(),
                                        batch["num_tokens"].to_pylist(), strict=True):
            c, t = self.commits.get(done_at, (0, 0))
            self.commits[done_at] = (c + cands, t + toks)
        self.queries += batch.num_rows
        self.candidates += sum(batch["n_candidates"].to_pylist())
        self.tokens += sum(batch["num_tokens"].to_pylist())
        self.prompt_tokens += sum(batch["prompt_tokens"].to_pylist())
        self.engine_s += sum(batch["engine_s"].to_pylist())
        self.cpu_s += sum(batch["cpu_s"].to_pylist())
        self.errors += [r for r in batch.to_pylist() if r["error"] is not None]

    def summary(self, **extra: Any) -> dict[str, Any]:
        gen_s = self.t_last - self.t_start
        times = sorted(self.commits)
        steady_s = times[-1] - times[0] if len(times) > 1 else 0.0
        first = self.commits[times[0]] if times else (0, 0)
        steady_cands, steady_tokens = self.candidates - first[0], self.tokens - first[1]
        out_dir = extra.pop("out_dir")
        return {
            **extra,
            "generated_queries": self.queries - len(self.errors),
            "generated_candidates": self.candidates,
            "errors": len(self.errors),
            "tokens": self.tokens,
            "prompt_tokens": self.prompt_tokens,
            "generate_s": round(gen_s, 3),
            "engine_s": round(self.engine_s, 3),
            "engine_actor_cpu_s": round(self.cpu_s, 3),
            "cands_per_s": round(self.candidates / gen_s, 4) if gen_s > 0 else None,
            "tokens_per_s": round(self.tokens / gen_s, 4) if gen_s > 0 else None,
            # Between the first and the last engine commit: excludes actor start-up and engine load.
            "steady_cands_per_s": round(steady_cands / steady_s, 4) if steady_s > 0 else None,
            "steady_tokens_per_s": round(steady_tokens / steady_s, 4) if steady_s > 0 else None,
            "out_dir": str(out_dir),
        }


def _consume(ds: Any, stats: _Stats, pending: int, progress: bool) -> None:
    bar = tqdm(total=pending, unit="query", desc="generate", disable=not progress, dynamic_ncols=True)
    with bar:
        for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
            stats.add(batch)
            bar.update(batch.num_rows)
            elapsed = max(time.perf_counter() - stats.t_start, 1e-9)
            bar.set_postfix(cands=stats.candidates, tok_s=f"{stats.tokens / elapsed:.1f}", errors=len(stats.errors))
