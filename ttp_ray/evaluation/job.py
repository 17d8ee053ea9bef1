"""`run_evaluate`: Parquet in, report out; small inputs in-process, large ones through Ray Data.

The Ray path parallelises what scales with the data (exact curves and correlations, grouped into shards of
whole users so each task also has everything ρ_u needs) with `groupby("shard").map_groups`; the driver keeps the aligned pools for the
cheap aggregate steps (law, Monte-Carlo protocol, plots). Both paths run the same `compute_stats`, so they
give the same numbers. `ray` is imported only inside the Ray path.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ttp_ray.config import dump_resolved
from ttp_ray.errors import DataError
from ttp_ray.evaluation.bon import Pools
from ttp_ray.evaluation.config import EvaluationConfig
from ttp_ray.evaluation.pools_io import pools_from_tables
from ttp_ray.evaluation.render import render_table
from ttp_ray.evaluation.report import report_from_pools, write_report
from ttp_ray.evaluation.stats import EvalStats, compute_stats
from ttp_ray.evaluation.training_free import finish_training_free, with_training_free

log = logging.getLogger(__name__)


def read_parquet(path: str | Path, what: str) -> pa.Table:
    """Read a Parquet file, or a folder's `part-*.parquet` (falling back to every `*.parquet` except errors)."""
    p = Path(path)
    if p.is_file():
        return pq.read_table(p)
    if p.is_dir():
        files = sorted(p.glob("part-*.parquet")) or sorted(f for f in p.glob("*.parquet") if f.name != "errors.parquet")
        if not files:
            raise DataError(f"no {what} Parquet files in folder", file=str(p))
        return pa.concat_tables([pq.read_table(f) for f in files], promote_options="default")
    raise DataError(f"{what} path does not exist", file=str(p))


# --------------------------------------------------------------------------------------- Ray path
def pools_to_table(pools: Pools) -> pa.Table:
    """Flat candidate rows with global query/user indices, the position `pos`, goldens and scores."""
    q = pools.query_of_candidate
    cols: dict[str, Any] = {"pos": np.arange(pools.n_candidates), "q": q, "u": pools.user_codes[q]}
    cols.update({f"golden::{g}": a for g, a in pools.golden.items()})
    cols.update({f"score::{m}": a for m, a in pools.scores.items()})
    return pa.table(cols)


def _pools_from_group(batch: pa.Table) -> tuple[Pools, np.ndarray, np.ndarray]:
    """Rebuild the Pools of one group (rows back in global order); returns (pools, global q, global u)."""
    order = np.argsort(batch["pos"].to_numpy())
    q = batch["q"].to_numpy()[order]
    u = batch["u"].to_numpy()[order]
    starts = np.flatnonzero(np.r_[True, q[1:] != q[:-1]])
    offsets = np.r_[starts, q.size].astype(np.int64)
    uq = u[starts]
    users, codes = np.unique(uq, return_inverse=True)

    def col(name: str) -> np.ndarray:
        return batch[name].to_numpy()[order].astype(np.float64)

    names = batch.column_names
    pools = Pools(
        users=users.astype(str), user_codes=codes.astype(np.int64), query_ids=q[starts].astype(str),
        offsets=offsets,
        golden={n.split("::", 1)[1]: col(n) for n in names if n.startswith("golden::")},
        scores={n.split("::", 1)[1]: col(n) for n in names if n.startswith("score::")},
    )
    return pools, q[starts], users


def _stats_group(batch: pa.Table, *, cfg_json: str, grid_max: int) -> pa.Table:
    """map_groups function: one shard's rows (whole users) -> their per-query stats rows (global indices)."""
    pools, q_global, u_global = _pools_from_group(batch)
    stats = compute_stats(pools, EvaluationConfig.model_validate_json(cfg_json), grid_max)
    return stats.to_arrow(q_global, u_global, pools.user_codes)


def compute_stats_ray(pools: Pools, cfg: EvaluationConfig, shards: int | None = None) -> EvalStats:
    """`compute_stats` as Ray Data tasks; same numbers as the in-process call.

    Users are hashed into `shards` groups (default: the cluster's CPU count) and `groupby("shard")
    .map_groups` runs one vectorised `compute_stats` per shard. A shard holds whole users, so ρ_u is complete,
    and a group per user would pay per-call overhead thousands of times.
    """
    import ray
    from ray.data.context import ShuffleStrategy

    from ttp_ray.ray_utils import init_ray

    init_ray()  # no-op when already connected
    if shards is None:
        shards = int(ray.cluster_resources().get("CPU", 1))
    shards = max(1, min(shards, pools.n_users))
    grid_max = int(pools.sizes.max())
    table = pools_to_table(pools)
    table = table.append_column("shard", pa.array(table["u"].to_numpy() % shards))
    ds = ray.data.from_arrow(table)
    # Task-based sort shuffle for this dataset only: the default hash shuffle starts aggregator actors, which
    # cost tens of seconds on a busy node for a numeric table this size (global DataContext left untouched).
    ds.context.shuffle_strategy = ShuffleStrategy.SORT_SHUFFLE_PULL_BASED
    out = ds.groupby("shard", num_partitions=shards).map_groups(
        _stats_group, batch_format="pyarrow", fn_kwargs={"cfg_json": cfg.model_dump_json(), "grid_max": grid_max})
    stats_table = pa.concat_tables(ray.get(out.to_arrow_refs()))
    return EvalStats.from_arrow(stats_table, pools.n_queries, pools.n_users, np.arange(1, grid_max + 1))


def use_ray_path(n_candidates: int, cfg: EvaluationConfig, use_ray: bool | None = None) -> bool:
    """The engine choice: `use_ray` when given, else Ray Data from `cfg.ray_min_candidates` candidates up."""
    return n_candidates >= cfg.ray_min_candidates if use_ray is None else use_ray


# --------------------------------------------------------------------------------------- entry point
def run_evaluate(
    candidates_path: str | Path,
    scores_path: str | Path,
    out_dir: str | Path,
    cfg: EvaluationConfig | None = None,
    dataset: str = "dataset",
    *,
    use_ray: bool | None = None,
    profile_path: str | Path | None = None,
) -> dict:
    """Evaluate SCORES against the eval pools of CANDIDATES and write report.json/.md + PNGs to `out_dir`.

    Args:
        candidates_path: CANDIDATES Parquet file or folder (`part-*.parquet`).
        scores_path: SCORES Parquet file or folder.
        out_dir: output folder (created); also receives `config.resolved.yaml`.
        cfg: evaluation settings (defaults if None).
        dataset: name recorded in the report.
        use_ray: force (True) or forbid (False) the Ray Data path; None decides by `cfg.ray_min_candidates`.
        profile_path: the dataset's PROFILE Parquet; adds the training-free `profile-mbr` selector.

    Returns:
        The report dict as written to report.json (no private plot data).

    Raises:
        DataError: a missing file/column, duplicate or missing score rows, non-finite scores.
    """
    cfg = cfg or EvaluationConfig()
    t0 = time.perf_counter()
    candidates = read_parquet(candidates_path, "candidates")
    scores = read_parquet(scores_path, "scores")
    pools, info = pools_from_tables(candidates, scores, required_golden=cfg.golden,
                                    candidates_file=str(candidates_path), scores_file=str(scores_path))
    profiles = None
    if profile_path is not None and Path(profile_path).exists():
        prof = read_parquet(profile_path, "profile").select(["user_id", "output"]).to_pydict()
        profiles = {}
        for u, o in zip(prof["user_id"], prof["output"], strict=True):
            profiles.setdefault(u, []).append(o)
    pools, cols = with_training_free(pools, info, profiles, cfg.mbr_metric)
    ray_path = use_ray_path(pools.n_candidates, cfg, use_ray)
    log.info("evaluating %s: %d candidates, %d queries, %d users, methods %s (%s)", dataset, pools.n_candidates,
             pools.n_queries, pools.n_users, pools.methods, "Ray Data" if ray_path else "in-process")
    stats = compute_stats_ray(pools, cfg) if ray_path else None
    report = finish_training_free(report_from_pools(pools, cfg, dataset=dataset, data_info=info, stats=stats),
                                  pools, cols, cfg)
    report["data"]["engine"] = "ray" if ray_path else "in-process"
    dump_resolved(cfg, out_dir)
    written = write_report(report, out_dir)
    log.info("report written to %s in %.1fs:\n%s", Path(out_dir) / "report.md", time.perf_counter() - t0,
             render_table(report))
    public = {k: v for k, v in report.items() if k != "_plot_data"}
    public["plots"] = {k: p.name for k, p in written.items() if p.suffix == ".png"}
    return public
