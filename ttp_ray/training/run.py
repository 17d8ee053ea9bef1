"""Entry points: `run_train` (the Ray pipeline stage) and `train_reward_models_local` (in-process, no Ray).

`run_train(run_dir, dataset, cfg)` reads

    {run_dir}/candidates/{dataset}/rm_train/part-*.parquet     CANDIDATES (pseudo-queries, golden filled)
    {run_dir}/candidates/{dataset}/eval/part-*.parquet         CANDIDATES to score
    {run_dir}/data/{dataset}/profile.parquet                   PROFILE (user contexts)

and writes `{run_dir}/rm/{dataset}/features/…` (cached features), `{run_dir}/rm/{dataset}/<variant>/` (one
checkpoint per variant) and `{run_dir}/scores/{dataset}/scores.parquet` (SCORES). Finished pieces are skipped,
so a re-run resumes where the last one stopped — but only while `{rm_dir}/_inputs.json`, the fingerprint of the
settings and inputs the checkpoints there were trained from, still matches: a changed training setting, new
RM-training candidates or a new profile retrain the dataset's RMs and rescore (was: a changed setting silently
kept the old checkpoints and reported them under the new config).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ttp_ray.config import dump_resolved
from ttp_ray.errors import DataError, TTPValidationError
from ttp_ray.reward.features import Featurizer, UserContext, population_context
from ttp_ray.reward.heads import RewardHead
from ttp_ray.reward.pool import query_groups
from ttp_ray.training.checkpoint import is_complete, load_rm_checkpoint, save_rm_checkpoint
from ttp_ray.training.config import TrainingConfig
from ttp_ray.training.features_job import (
    build_contexts,
    compute_features,
    compute_static_table,
    features_matrix,
    read_feature_table,
    run_features_job,
    with_pool_column,
)
from ttp_ray.training.global_fit import fit_global_head
from ttp_ray.training.global_stage import run_global_stage
from ttp_ray.training.global_worker import FaultInjection
from ttp_ray.training.user_fit import fit_user_stage, sort_rows, split_by_query
from ttp_ray.training.user_stage import run_user_stage

__all__ = ["run_train", "train_reward_models_local"]

log = logging.getLogger(__name__)


def _global_variant(prob: bool) -> str:
    return "global-prob" if prob else "global-det"


def _needed_heads(variants: list[str]) -> list[bool]:
    """Which global heads (Det=False, Prob=True) the requested variants need, Det first."""
    return sorted({v.endswith("prob") for v in variants})


# settings that change how fast the RMs train, never what they are; `variants` is per-checkpoint completeness
_NOT_FINGERPRINTED = frozenset({"feature_job", "score_batch_size", "variants"})
INPUTS_FILE = "_inputs.json"


def training_fingerprint(cfg: TrainingConfig, cand_dir: Path, profile_path: Path) -> dict[str, Any]:
    """What the checkpoints of a dataset depend on: every output-affecting training setting (by section), the
    RM-training candidate parts (their names carry the generation epoch) and the profile's bytes."""
    dump = cfg.model_dump(mode="json")
    fp: dict[str, Any] = {k: v for k, v in dump.items() if k not in _NOT_FINGERPRINTED}
    fp["rm_train candidates"] = sorted(p.name for p in cand_dir.glob("part-*.parquet"))
    fp["profile"] = hashlib.sha256(profile_path.read_bytes()).hexdigest()
    return fp


def _reset_if_changed(rm_dir: Path, scores_path: Path, fp: dict[str, Any]) -> list[str]:
    """Remove checkpoints and scores trained from other settings or inputs; returns what changed ([] = none)."""
    path = rm_dir / INPUTS_FILE
    old = json.loads(path.read_text()) if path.is_file() else None
    if old == fp:
        return []
    trained = rm_dir.is_dir() and any(p.name != INPUTS_FILE for p in rm_dir.iterdir())
    changed = (["(no record of the settings: trained before fingerprints)"] if old is None
               else sorted(k for k in set(old) | set(fp) if old.get(k) != fp.get(k)))
    if trained or scores_path.exists():
        log.warning("%s: %s changed since these reward models were trained; retraining them", rm_dir,
                    ", ".join(changed))
        shutil.rmtree(rm_dir, ignore_errors=True)
        scores_path.unlink(missing_ok=True)
    rm_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(fp, indent=1, sort_keys=True))
    tmp.replace(path)
    return changed if trained else []


def _strip(contexts: dict[str, UserContext]) -> dict[str, UserContext]:
    return {u: c.without_items() for u, c in contexts.items()}


def _training_meta(cfg: TrainingConfig, **extra: Any) -> dict[str, Any]:
    return {**cfg.model_dump(mode="json"), **extra}


# ---------------------------------------------------------------------------------------------------------------
# In-process (no Ray)
# ---------------------------------------------------------------------------------------------------------------


def train_reward_models_local(
    candidates: pa.Table,
    profile: pa.Table,
    rm_dir: str | Path,
    cfg: TrainingConfig | None = None,
    *,
    featurizer: Featurizer | None = None,
    progress: bool = False,
) -> dict[str, Path]:
    """Train the configured variants in this process (no Ray) and write them under `rm_dir`.

    Handy for building a test checkpoint quickly (the serving tests do). Frozen backbone only.

    Args:
        candidates: CANDIDATES rows of mode "rm_train" (golden column `cfg.golden` filled).
        profile: the PROFILE table of the same users.
        rm_dir: output folder; one sub-folder per variant (overwritten).
        cfg: defaults to `TrainingConfig()`.
        featurizer: reuse a loaded featurizer (must match `cfg.features`).

    Returns:
        {variant: checkpoint folder}.

    Example:
        >>> paths = train_reward_models_local(cands, profile, "/tmp/rm")  # doctest: +SKIP
        >>> RewardScorer.from_checkpoint("/tmp/rm", "user-prob").score("u1", "query", ["a", "b"])  # doctest: +SKIP
    """
    cfg = cfg or TrainingConfig()
    if cfg.global_stage.backbone_mode != "frozen":
        raise TTPValidationError("train_reward_models_local trains on a frozen backbone only",
                                 parameter="global_stage.backbone_mode", value=cfg.global_stage.backbone_mode)
    t0 = time.perf_counter()
    fz = featurizer or Featurizer.from_config(cfg.features)
    contexts = build_contexts(fz, profile, progress=progress)
    population = population_context(contexts.values())
    if cfg.features.pool_blocks:  # whole pools, contiguous, whatever order the caller's table has
        candidates = with_pool_column(candidates, list(cfg.features.pool_blocks))
    ft = compute_features(fz, candidates, contexts, population)
    x = features_matrix(ft)
    g = ft[cfg.golden].to_numpy(zero_copy_only=False).astype(np.float32)
    if np.isnan(g).any():
        raise DataError(f"golden column {cfg.golden!r} has nulls", file="<candidates>", field=cfg.golden)
    user_index = sorted(set(contexts) | set(ft["user_id"].to_pylist()))
    row = {u: i for i, u in enumerate(user_index)}
    u = np.array([row[v] for v in ft["user_id"].to_pylist()], dtype=np.int64)
    q = ft["query_id"].to_numpy(zero_copy_only=False)
    val_mask = split_by_query(u, q, cfg.user_stage.val_fraction, cfg.user_stage.seed)
    out: dict[str, Path] = {}
    rm_dir = Path(rm_dir)
    common = {"feature_cfg": cfg.features, "embed_dim": fz.embed_dim, "user_index": user_index,
              "contexts": _strip(contexts), "population": population}
    for prob in _needed_heads(cfg.variants):
        head_cfg = cfg.head_config(probabilistic=prob)
        gfit = fit_global_head(x, g, val_mask, head_cfg, cfg.global_stage, seed=cfg.seed, progress=progress,
                               groups=query_groups(u, q), objective=cfg.user_stage.objective)
        gv = _global_variant(prob)
        if gv in cfg.variants:
            out[gv] = save_rm_checkpoint(rm_dir / gv, variant=gv, head=gfit.head,
                                         training=_training_meta(cfg, best_epoch=gfit.best_epoch), **common)
        uv = "user-prob" if prob else "user-det"
        if uv in cfg.variants:
            ucfg = cfg.user_stage.model_copy(update={"probabilistic": prob})
            res = fit_user_stage(x, g, u, q, gfit.head, ucfg, n_users=len(user_index), progress=progress)
            out[uv] = save_rm_checkpoint(rm_dir / uv, variant=uv, head=gfit.head, model=res.model,
                                         training=_training_meta(cfg), **common)
    log.info("trained %s in %.1fs", sorted(out), time.perf_counter() - t0)
    return out


# ---------------------------------------------------------------------------------------------------------------
# Ray pipeline stage
# ---------------------------------------------------------------------------------------------------------------


@contextmanager
def _phase(summary: dict[str, Any], name: str) -> Iterator[None]:
    """Log a pipeline phase and record its wall time in `summary["timings"]`."""
    log.info("training: %s ...", name)
    t0 = time.perf_counter()
    yield
    dt = time.perf_counter() - t0
    summary.setdefault("timings", {})[name] = round(dt, 1)
    log.info("training: %s done in %.1fs", name, dt)


def _key(u: str, q: str) -> str:
    return f"{u}\x1f{q}"


def _filter_split(batch: pa.Table, val_keys: frozenset[str], want_val: bool) -> pa.Table:
    keys = [_key(u, q) for u, q in zip(batch["user_id"].to_pylist(), batch["query_id"].to_pylist(), strict=True)]
    mask = pa.array([(k in val_keys) == want_val for k in keys], pa.bool_())
    return batch.filter(mask)


def _train_stats(feat_dir: Path, val_keys: frozenset[str], golden: str) -> dict[str, Any]:
    """Standardisation statistics and golden moments of the training rows, streamed over the cache."""
    import pyarrow.dataset as pads

    s = s2 = None
    n = 0
    gs = []
    for batch in pads.dataset(str(feat_dir), format="parquet").to_batches(
            columns=["user_id", "query_id", golden, "features"]):
        t = _filter_split(pa.Table.from_batches([batch]), val_keys, want_val=False)
        if t.num_rows == 0:
            continue
        x = features_matrix(t).astype(np.float64)
        s = x.sum(0) if s is None else s + x.sum(0)
        s2 = (x * x).sum(0) if s2 is None else s2 + (x * x).sum(0)
        n += len(x)
        gs.append(t[golden].to_numpy(zero_copy_only=False))
    if n == 0:
        raise DataError("no training rows left after the validation split", file=str(feat_dir))
    mean = s / n
    std = np.sqrt(np.maximum(s2 / n - mean**2, 0.0))
    g = np.concatenate(gs)
    return {"in_dim": len(mean), "x_mean": mean, "x_std": np.where(std > 1e-8, std, 1.0),
            "g_mean": float(g.mean()), "g_var": float(g.var())}


def run_train(
    run_dir: str | Path,
    dataset: str,
    cfg: TrainingConfig | None = None,
    *,
    fault: FaultInjection | None = None,
) -> dict[str, Any]:
    """Train the configured RM variants on Ray (features → global stage → user stage) and score eval pools.

    Needs a Ray cluster (the entry point calls `ttp_ray.ray_utils.init_ray`). Returns a summary dict:
    {"rm_dir", "scores", "variants": {variant: "trained"|"skipped"}, "seconds", "global": {...metrics}}.
    `fault` is a testing hook that kills a global-stage worker once (see `FaultInjection`).
    """
    cfg = cfg or TrainingConfig()
    t0 = time.perf_counter()
    run_dir = Path(run_dir)
    cand_dir = run_dir / "candidates" / dataset / "rm_train"
    eval_dir = run_dir / "candidates" / dataset / "eval"
    profile_path = run_dir / "data" / dataset / "profile.parquet"
    rm_dir = run_dir / "rm" / dataset
    scores_path = run_dir / "scores" / dataset / "scores.parquet"
    for p in (cand_dir, profile_path):
        if not p.exists():
            raise DataError("training input not found (run the data and generation stages first)", file=str(p))
    summary: dict[str, Any] = {"rm_dir": str(rm_dir), "variants": {}, "global": {},
                               "retrained_because": _reset_if_changed(
                                   rm_dir, scores_path, training_fingerprint(cfg, cand_dir, profile_path))}
    profile = pq.read_table(profile_path)
    todo = [v for v in cfg.variants if not is_complete(rm_dir / v)]
    for v in cfg.variants:
        summary["variants"][v] = "trained" if v in todo else "skipped"
    if todo:
        dump_resolved(cfg, rm_dir, "training.resolved.yaml")  # when it runs, never before a skip
        _train_variants(cfg, todo, cand_dir, profile, rm_dir, summary, fault)
    if eval_dir.exists() and any(eval_dir.glob("part-*.parquet")):
        stale = scores_path.exists() and any(
            (rm_dir / v / "manifest.json").stat().st_mtime > scores_path.stat().st_mtime for v in cfg.variants)
        if not scores_path.exists() or stale:
            from ttp_ray.training.scoring_job import run_scoring_job

            with _phase(summary, "scoring"):
                run_scoring_job(eval_dir, rm_dir, scores_path, cfg.variants,
                                num_actors=cfg.feature_job.num_actors, batch_size=cfg.score_batch_size,
                                num_cpus_per_actor=cfg.feature_job.num_cpus_per_actor,
                                num_gpus_per_actor=cfg.feature_job.num_gpus_per_actor)
        summary["scores"] = str(scores_path)
    else:
        log.warning("no eval candidates under %s: nothing to score", eval_dir)
    summary["seconds"] = round(time.perf_counter() - t0, 1)
    return summary


def _train_variants(cfg: TrainingConfig, todo: list[str], cand_dir: Path, profile: pa.Table, rm_dir: Path,
                    summary: dict[str, Any], fault: FaultInjection | None) -> None:
    fj, gs = cfg.feature_job, cfg.global_stage
    frozen_dir = rm_dir / "features" / "frozen" / "rm_train"
    if gs.backbone_mode == "frozen":
        with _phase(summary, "features"):
            run_features_job(cand_dir, profile, frozen_dir, cfg.features, num_actors=fj.num_actors,
                             batch_size=fj.batch_size, num_cpus_per_actor=fj.num_cpus_per_actor,
                             num_gpus_per_actor=fj.num_gpus_per_actor)
    with _phase(summary, "user_contexts"):
        fz = Featurizer.from_config(cfg.features)
        contexts = build_contexts(fz, profile, keep_items=gs.backbone_mode != "frozen")
    # only the committed part files: the folder also holds errors.parquet (ERRORS schema) and a manifest
    keys = pa.concat_tables([pq.read_table(p, columns=["user_id", "query_id"])
                             for p in sorted(Path(cand_dir).glob("part-*.parquet"))])
    user_index = sorted(set(contexts) | set(keys["user_id"].to_pylist()))
    row = {u: i for i, u in enumerate(user_index)}
    u = np.array([row[x] for x in keys["user_id"].to_pylist()], dtype=np.int64)
    q = keys["query_id"].to_numpy(zero_copy_only=False)
    vm = split_by_query(u, q, cfg.user_stage.val_fraction, cfg.user_stage.seed)
    val_keys = frozenset(_key(a, b) for a, b, m in zip(keys["user_id"].to_pylist(), q, vm, strict=True) if m)
    storage = rm_dir / "_ray"
    adapter = _tuned_root(rm_dir) / "adapter"  # written by `_global` when LoRA tunes the backbone

    # Global heads: reuse finished global checkpoints, train the missing ones side by side in one Ray Train run.
    needed = {_global_variant(p): p for p in _needed_heads(todo)}
    heads: dict[str, RewardHead] = {}
    loaded = {gv: load_rm_checkpoint(rm_dir / gv) for gv in needed if gv not in todo and is_complete(rm_dir / gv)}
    if len(loaded) == len(needed):
        any_ck = next(iter(loaded.values()))
        heads = {gv: ck.head for gv, ck in loaded.items()}
        backbone_state, ctxs, pop = any_ck.backbone_state, any_ck.contexts, any_ck.population
        feat_dir = frozen_dir if not backbone_state else _tuned_root(rm_dir) / "rm_train"
    else:
        with _phase(summary, "global_stage"):
            heads, backbone_state, feat_dir, ctxs, pop, metrics = _global(
                cfg, needed, cand_dir, profile, frozen_dir, fz, contexts, val_keys, storage, fault)
        summary["global"] = metrics
        for gv in needed:
            if gv in todo:
                save_rm_checkpoint(rm_dir / gv, variant=gv, head=heads[gv], feature_cfg=cfg.features,
                                   embed_dim=fz.embed_dim, user_index=user_index, contexts=ctxs, population=pop,
                                   training=_training_meta(cfg), backbone_state=backbone_state, metrics=metrics,
                                   adapter_dir=adapter if backbone_state and adapter.is_dir() else None)

    # User banks: one Ray Train run fits every user variant on the same user slices.
    jobs = {}
    for gv, prob in needed.items():
        uv = "user-prob" if prob else "user-det"
        if uv in todo:
            jobs[uv] = (heads[gv], cfg.user_stage.model_copy(update={"probabilistic": prob}))
    if not jobs:
        return
    if cfg.user_stage_workers > 0:
        with _phase(summary, "user_stage"):
            models = run_user_stage(feat_dir, user_index, jobs, golden=cfg.golden,
                                    num_workers=cfg.user_stage_workers, storage_path=storage, name="user-stage",
                                    use_gpu=cfg.use_gpu, resources_per_worker=cfg.resources_per_worker)
    else:
        t = sort_rows(read_feature_table(feat_dir, columns=["user_id", "query_id", "cand_idx", cfg.golden,
                                                            "features"]))
        x, g = features_matrix(t), t[cfg.golden].to_numpy(zero_copy_only=False)
        uu = np.array([row[v] for v in t["user_id"].to_pylist()], dtype=np.int64)
        qq = t["query_id"].to_numpy(zero_copy_only=False)
        models = {uv: fit_user_stage(x, g, uu, qq, head, ucfg, n_users=len(user_index)).model
                  for uv, (head, ucfg) in jobs.items()}
    for uv, model in models.items():
        save_rm_checkpoint(rm_dir / uv, variant=uv, head=model.head, model=model, feature_cfg=cfg.features,
                           embed_dim=fz.embed_dim, user_index=user_index, contexts=ctxs, population=pop,
                           training=_training_meta(cfg), backbone_state=backbone_state,
                           adapter_dir=adapter if backbone_state and adapter.is_dir() else None)


def _global(cfg: TrainingConfig, needed: dict[str, bool], cand_dir: Path, profile: pa.Table, frozen_dir: Path,
            fz: Featurizer, contexts: dict[str, UserContext], val_keys: frozenset[str], storage: Path,
            fault: FaultInjection | None) -> tuple:
    """The global heads on Ray Train; returns (heads, backbone_state, user-stage feature dir, contexts,
    population, metrics).

    A tuned backbone (LoRA/full) is fit jointly with the heads on text, then every feature is recomputed with it
    — the user contexts too — and the global heads are refit on those features (a second, cheap Ray Train run on
    the cached tuned features). So the global heads, the per-user banks and the scorer all read one
    representation: during the joint fit the user centroids still come from the untuned backbone (re-encoding
    every profile per step is what the refit avoids). The joint fit's record is kept under `joint/`.
    """
    import ray

    gs = cfg.global_stage
    head_cfgs = {gv: cfg.head_config(probabilistic=prob) for gv, prob in needed.items()}
    if gs.backbone_mode == "frozen":
        res = _fit_on_features(cfg, head_cfgs, frozen_dir, val_keys, storage, "global-stage", fault)
        return (res.heads, None, frozen_dir, _strip(contexts), population_context(contexts.values()),
                _scalars(res.metrics))
    population = population_context(contexts.values())
    cands = pa.concat_tables([pq.read_table(p) for p in sorted(Path(cand_dir).glob("part-*.parquet"))])
    static = compute_static_table(fz, cands, contexts)
    x = features_matrix(compute_features(fz, cands, contexts, population))
    tr = np.array([_key(a, b) not in val_keys for a, b in zip(static["user_id"].to_pylist(),
                                                              static["query_id"].to_pylist(), strict=True)])
    std = x[tr].std(0)
    gcol = static[cfg.golden].to_numpy(zero_copy_only=False)[tr]
    stats = {"in_dim": x.shape[1], "x_mean": x[tr].mean(0), "x_std": np.where(std > 1e-8, std, 1.0),
             "g_mean": float(gcol.mean()), "g_var": float(gcol.var())}
    train_ds, val_ds = _split_datasets(ray.data.from_arrow(static), val_keys)
    res = run_global_stage(train_ds, val_ds, head_cfgs=head_cfgs, cfg=gs, feature_cfg=cfg.features,
                           golden=cfg.golden, storage_path=storage, name="global-stage", seed=cfg.seed,
                           fault=fault, objective=cfg.user_stage.objective, use_gpu=cfg.use_gpu,
                           resources_per_worker=cfg.resources_per_worker, **stats)
    lora = ({"r": gs.lora_r, "alpha": gs.lora_alpha, "target_modules": gs.lora_target_modules}
            if gs.backbone_mode == "lora" else None)
    tuned = Featurizer.from_config(cfg.features)
    if lora:
        tuned.backbone.apply_lora(lora["r"], lora["alpha"], 0.0, lora["target_modules"])
    tuned.backbone.load_trainable_state_dict(res.backbone_state)
    tuned.backbone.freeze()
    tuned_root = _tuned_root(frozen_dir.parent.parent.parent)
    if lora:  # PEFT's own format, copied into every checkpoint (`PeftModel.from_pretrained` reads it)
        shutil.rmtree(tuned_root / "adapter", ignore_errors=True)
        tuned.backbone.save_adapter(tuned_root / "adapter")
    ctxs = build_contexts(tuned, profile, keep_items=False)
    feat_dir = tuned_root / "rm_train"
    fj = cfg.feature_job
    run_features_job(cand_dir, profile, feat_dir, cfg.features, num_actors=fj.num_actors, batch_size=fj.batch_size,
                     num_cpus_per_actor=fj.num_cpus_per_actor, num_gpus_per_actor=fj.num_gpus_per_actor,
                     backbone_state=res.backbone_state, lora=lora)
    refit = _fit_on_features(cfg, head_cfgs, feat_dir, val_keys, storage, "global-stage-refit", None)
    metrics = _scalars(refit.metrics) | {f"joint/{k}": v for k, v in _scalars(res.metrics).items()}
    return refit.heads, res.backbone_state, feat_dir, ctxs, population_context(ctxs.values()), metrics


def _tuned_root(rm_dir: Path) -> Path:
    """Where a tuned backbone's features and PEFT adapter live: `rm/<ds>/features/tuned/`."""
    return rm_dir / "features" / "tuned"


def _scalars(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metrics.items() if isinstance(v, int | float | bool)}


def _split_datasets(base: Any, val_keys: frozenset[str]) -> tuple[Any, Any]:
    train_ds = base.map_batches(_filter_split, fn_kwargs={"val_keys": val_keys, "want_val": False},
                                batch_format="pyarrow")
    val_ds = base.map_batches(_filter_split, fn_kwargs={"val_keys": val_keys, "want_val": True},
                              batch_format="pyarrow") if val_keys else None
    return train_ds, val_ds


def _fit_on_features(cfg: TrainingConfig, head_cfgs: dict[str, Any], feat_dir: Path, val_keys: frozenset[str],
                     storage: Path, name: str, fault: FaultInjection | None) -> Any:
    """The global heads on cached features (frozen backbone, or the tuned one's recomputed features)."""
    import ray

    base = ray.data.read_parquet(str(feat_dir), columns=["user_id", "query_id", "cand_idx", cfg.golden, "features"])
    train_ds, val_ds = _split_datasets(base, val_keys)
    heads_cfg = cfg.global_stage.model_copy(update={"backbone_mode": "frozen", "gradient_checkpointing": False})
    return run_global_stage(train_ds, val_ds, head_cfgs=head_cfgs, cfg=heads_cfg, feature_cfg=cfg.features,
                            golden=cfg.golden, storage_path=storage, name=name, seed=cfg.seed, fault=fault,
                            objective=cfg.user_stage.objective, use_gpu=cfg.use_gpu,
                            resources_per_worker=cfg.resources_per_worker, **_train_stats(feat_dir, val_keys,
                                                                                          cfg.golden))
