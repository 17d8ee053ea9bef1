"""Backbone features of candidate tables, computed once and cached as Parquet (the frozen-backbone path).

Pure helpers (`compute_features`, `features_matrix`) work in-process; `run_features_job` is the Ray Data batch
pass: candidate Parquet files stream through an actor pool where each actor holds the encoder and builds user
contexts (profile-output embeddings) lazily for the users it sees. Output rows keep the candidate keys and the
golden columns next to a fixed-size-list `features` column:

    user_id, query_id, cand_idx, mode, rouge1, rougeL, features: fixed_size_list<float32>[D]

`rm_train` rows use leave-one-out user contexts (the pseudo-query's own profile item is excluded).

With pool-aware feature blocks (`FeatureConfig.pool_blocks`) the candidates are read one whole part file per
task (`read_pool_parts`): the generation store keeps every candidate of a query in one part, so each pool is
whole there and its pool column is computed over all of it, whatever batch boundaries come later.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from ttp_ray.errors import DataError
from ttp_ray.reward.config import FeatureConfig
from ttp_ray.reward.features import FeatureRequest, Featurizer, UserContext
from ttp_ray.reward.pool import pool_features_by_offsets, pool_offsets

__all__ = [
    "FEATURE_KEYS",
    "FeatureUDF",
    "build_contexts",
    "compute_features",
    "compute_static_table",
    "features_matrix",
    "pool_matrix",
    "read_feature_table",
    "read_pool_parts",
    "with_pool_column",
    "run_features_job",
]

log = logging.getLogger(__name__)

FEATURE_KEYS = ["user_id", "query_id", "cand_idx", "mode", "rouge1", "rougeL"]
_NEEDED = ["user_id", "query_id", "cand_idx", "mode", "query_text", "text", "rouge1", "rougeL"]


def build_contexts(featurizer: Featurizer, profile: pa.Table, users: set[str] | None = None, *,
                   keep_items: bool = True, progress: bool = False) -> dict[str, UserContext]:
    """User contexts from a PROFILE table (optionally only `users`)."""
    t = profile.select(["user_id", "item_id", "output"])
    if users is not None:
        import pyarrow.compute as pc

        t = t.filter(pc.is_in(t["user_id"], pa.array(sorted(users), pa.string())))
    return featurizer.build_contexts(t["user_id"].to_pylist(), t["item_id"].to_pylist(), t["output"].to_pylist(),
                                     keep_items=keep_items, progress=progress)


def _requests(candidates: pa.Table, contexts: Mapping[str, UserContext], population: UserContext | None,
              file: str) -> list[FeatureRequest]:
    """One request per run of rows with the same (user, query), in row order."""
    missing = [c for c in _NEEDED if c not in candidates.column_names]
    if missing:
        raise DataError(f"candidate table lacks columns {missing}", file=file)
    cols = {c: candidates[c].to_pylist() for c in ("user_id", "query_id", "mode", "query_text", "text")}
    pool = pool_matrix(candidates)
    requests: list[FeatureRequest] = []
    n = candidates.num_rows
    i = 0
    while i < n:
        u, q = cols["user_id"][i], cols["query_id"][i]
        j = i
        while j < n and cols["user_id"][j] == u and cols["query_id"][j] == q:
            j += 1
        ctx = contexts.get(u)
        if ctx is None:
            if population is None:
                raise DataError(f"user {u!r} has no profile context", file=file, record_id=q, field="user_id")
            ctx = population
        exclude = q if cols["mode"][i] == "rm_train" else None  # leave-one-out for pseudo-queries
        requests.append(FeatureRequest(ctx, cols["query_text"][i], cols["text"][i:j], exclude,
                                       pool=pool[i:j] if pool is not None else None))
        i = j
    return requests


def _fixed_list(x: np.ndarray) -> pa.FixedSizeListArray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1), pa.float32()), x.shape[1])


def compute_features(
    featurizer: Featurizer,
    candidates: pa.Table,
    contexts: Mapping[str, UserContext],
    population: UserContext | None = None,
    *,
    file: str = "<candidates>",
) -> pa.Table:
    """Feature rows for a CANDIDATES table (row order kept). Users without a context use `population`."""
    requests = _requests(candidates, contexts, population, file)
    x = featurizer.features(requests).numpy()
    return candidates.select(FEATURE_KEYS).append_column("features", _fixed_list(x.reshape(len(x), featurizer.dim)))


def compute_static_table(
    featurizer: Featurizer,
    candidates: pa.Table,
    contexts: Mapping[str, UserContext],
    population: UserContext | None = None,
) -> pa.Table:
    """Rows for training a LoRA/full backbone: the texts plus everything that needs no backbone pass
    (the user-centroid rows `cu`, the static scalars in `STATIC_SCALARS` order, and with `pool_blocks` the
    pool-aware columns `pool`, from each row's whole pool — `candidates` holds every pool whole)."""
    from ttp_ray.reward.features import STATIC_SCALARS

    requests = _requests(candidates, contexts, population, "<candidates>")
    cu, scal = featurizer.static_parts(requests)
    scalars = np.stack([scal[k].numpy() for k in STATIC_SCALARS], axis=1) if len(cu) else np.zeros(
        (0, len(STATIC_SCALARS)), np.float32)
    out = candidates.select([*FEATURE_KEYS, "query_text", "text"])
    out = out.append_column("cu", _fixed_list(cu.numpy())).append_column("scalars", _fixed_list(scalars))
    if featurizer.cfg.pool_blocks:
        out = out.append_column("pool", _fixed_list(featurizer.pool_columns(requests).numpy()))
    return out


def pool_matrix(table: pa.Table) -> np.ndarray | None:
    """(rows, P) the precomputed `pool` column (whole-pool features), or None when the table has none."""
    if "pool" not in table.column_names:
        return None
    col = table["pool"].combine_chunks()
    width = col.type.list_size
    return col.flatten().to_numpy(zero_copy_only=False).reshape(len(col), width) if len(col) else np.zeros((0, width))


def with_pool_column(table: pa.Table, blocks: list[str], *, file: str = "<candidates>") -> pa.Table:
    """`table` sorted by (user, query, candidate) plus its `pool` column, each pool taken whole from `table`.

    Raises DataError when a pool is visibly incomplete (its candidate indices are not 0..n-1).
    """
    t = table.sort_by([("user_id", "ascending"), ("query_id", "ascending"), ("cand_idx", "ascending")])
    users, queries = t["user_id"].to_pylist(), t["query_id"].to_pylist()
    off = pool_offsets(users, queries)
    cidx = t["cand_idx"].to_numpy(zero_copy_only=False)
    for lo, hi in zip(off[:-1], off[1:], strict=True):
        if not np.array_equal(cidx[lo:hi], np.arange(hi - lo)):
            raise DataError("pool-aware features need whole pools, but this pool's candidates are not 0..n-1 "
                            f"(got {cidx[lo:hi].tolist()[:8]}...)", file=file,
                            record_id=f"{users[lo]}/{queries[lo]}", field="cand_idx")
    pool = pool_features_by_offsets(t["text"].to_pylist(), off, blocks)
    return t.append_column("pool", _fixed_list(pool.reshape(t.num_rows, len(blocks))))


def _read_whole_parts(batch: dict[str, np.ndarray], columns: list[str], blocks: list[str]) -> pa.Table:
    """Ray Data task: a batch of part-file paths -> their rows with the whole-pool `pool` column."""
    return pa.concat_tables([with_pool_column(pq.read_table(str(p), columns=columns), blocks, file=str(p))
                             for p in batch["path"]])


def read_pool_parts(files: list[str], columns: list[str], pool_blocks: list[str]) -> Any:
    """A Ray Dataset of the candidate rows of `files` (`columns`), plus a whole-pool `pool` column when
    `pool_blocks` is non-empty (one task reads whole part files; see the module docstring)."""
    import ray

    if not pool_blocks:
        return ray.data.read_parquet(files, columns=columns)
    cols = list(dict.fromkeys([*columns, "user_id", "query_id", "cand_idx", "text"]))
    return ray.data.from_items([{"path": f} for f in files]).map_batches(
        _read_whole_parts, fn_kwargs={"columns": cols, "blocks": list(pool_blocks)}, batch_size=1,
        batch_format="numpy", num_cpus=0.5)


def features_matrix(table: pa.Table) -> np.ndarray:
    """(rows, D) float32 view of a feature table's `features` column."""
    col = table["features"].combine_chunks()
    if len(col) == 0:
        return np.zeros((0, col.type.list_size), dtype=np.float32)
    return col.flatten().to_numpy(zero_copy_only=False).reshape(len(col), col.type.list_size)


def read_feature_table(path: str | Path, columns: list[str] | None = None) -> pa.Table:
    """Read a cached feature folder (or file) written by `run_features_job`."""
    path = Path(path)
    if not path.exists():
        raise DataError("feature cache not found", file=str(path))
    return pq.read_table(path, columns=columns)


class FeatureUDF:
    """Ray Data `map_batches` callable: holds the encoder; builds user contexts lazily from the profile."""

    def __init__(self, feature_cfg: dict[str, Any], profile_ref: Any, backbone_state_ref: Any = None,
                 lora: dict[str, Any] | None = None, device: str = "cpu") -> None:
        import ray

        torch.set_num_threads(max(1, torch.get_num_threads()))
        self.featurizer = Featurizer.from_config(FeatureConfig.model_validate(feature_cfg), device=device)
        if backbone_state_ref is not None:
            state = ray.get(backbone_state_ref)
            if lora:
                self.featurizer.backbone.apply_lora(lora["r"], lora["alpha"], 0.0, lora.get("target_modules"))
            self.featurizer.backbone.load_trainable_state_dict(state)
            self.featurizer.backbone.freeze()
        self.profile: pa.Table = ray.get(profile_ref)
        self.contexts: dict[str, UserContext] = {}

    def __call__(self, batch: pa.Table) -> pa.Table:
        users = set(batch["user_id"].to_pylist()) - set(self.contexts)
        if users:
            self.contexts.update(build_contexts(self.featurizer, self.profile, users))
        population = None
        if users - set(self.contexts):  # users without a profile: score them as an average user
            from ttp_ray.reward.features import population_context

            population = population_context(self.contexts.values()) if self.contexts else None
        return compute_features(self.featurizer, batch, self.contexts, population)


def run_features_job(
    candidates_dir: str | Path,
    profile: pa.Table,
    out_dir: str | Path,
    feature_cfg: FeatureConfig,
    *,
    num_actors: int = 1,
    batch_size: int = 512,
    num_cpus_per_actor: float = 1.0,
    backbone_state: Mapping[str, torch.Tensor] | None = None,
    lora: dict[str, Any] | None = None,
    num_gpus_per_actor: float = 0.0,
) -> Path:
    """Ray Data pass: `candidates_dir` Parquet -> `out_dir/part-*.parquet` feature rows (skipped if done).

    Rows of one (user, query) pool must be contiguous in the input files (generation writes them so); a pool
    split across two batches simply becomes two requests with the same context, so results are unchanged.
    """
    import ray
    from ray.data import ActorPoolStrategy

    out = Path(out_dir)
    done = out / "_SUCCESS"
    if done.is_file():
        log.info("features already cached in %s", out)
        return out
    files = sorted(str(p) for p in Path(candidates_dir).glob("part-*.parquet"))
    if not files:
        raise DataError("no part-*.parquet candidate files", file=str(candidates_dir))
    profile_ref = ray.put(profile.select(["user_id", "item_id", "output"]))
    state_ref = ray.put(dict(backbone_state)) if backbone_state else None
    ds = read_pool_parts(files, _NEEDED, list(feature_cfg.pool_blocks))
    ds = ds.map_batches(
        FeatureUDF,
        fn_constructor_kwargs={"feature_cfg": feature_cfg.model_dump(), "profile_ref": profile_ref,
                               "backbone_state_ref": state_ref, "lora": lora,
                               "device": "cuda" if num_gpus_per_actor > 0 else "cpu"},
        batch_size=batch_size,
        batch_format="pyarrow",
        compute=ActorPoolStrategy(size=num_actors),
        num_cpus=num_cpus_per_actor,
        num_gpus=num_gpus_per_actor or None,
    )
    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        import shutil

        shutil.rmtree(tmp)
    ds.write_parquet(str(tmp))
    if out.exists():
        import shutil

        shutil.rmtree(out)
    tmp.rename(out)
    done.write_text("ok\n")
    return out
