"""Make a run directory tunable: RM-training (and eval) features cached under `{run_dir}/rm/{dataset}/features`.

`jobs/tune_variance_head.py --synthetic|--simulate` and the tests call `build_simulated_benchmark`, which runs the
pipeline's own data and generate stages (simulated candidate pools: no LLM) and then caches features:

    {run_dir}/data/{dataset}/…                                     stage_data
    {run_dir}/candidates/{dataset}/{rm_train,eval}/part-*.parquet   stage_generate (candidates: simulated)
    {run_dir}/rm/{dataset}/features/frozen/{rm_train,eval}/part-*.parquet + _SUCCESS   (`ensure_features`)

so `ttp train --config best.yaml` runs on the same folder afterwards. Every step skips work already on disk.
Features are computed in-process with the training package's `compute_features` (the function the Ray Data
feature job maps over batches): at benchmark sizes one encoder load beats starting an actor pool.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ttp_ray.data.dataset import LoadedDataset
from ttp_ray.errors import DataError
from ttp_ray.reward.config import FeatureConfig

__all__ = ["MODES", "build_simulated_benchmark", "ensure_features", "features_dir"]

log = logging.getLogger(__name__)

MODES = ("rm_train", "eval")


def features_dir(run_dir: str | Path, dataset: str, mode: str, backbone: str = "frozen") -> Path:
    """`{run_dir}/rm/{dataset}/features/{frozen|tuned}/{mode}`: the cache `ttp train` writes (rm_train; `tuned`
    when the global stage fine-tuned the backbone) and the sweep reads."""
    return Path(run_dir) / "rm" / dataset / "features" / backbone / mode


def ensure_features(
    run_dir: str | Path, dataset: str, feature_cfg: FeatureConfig, modes: tuple[str, ...] = MODES
) -> dict[str, Path]:
    """Cache features of `{run_dir}/candidates/{dataset}/{mode}` for each mode (skipped when `_SUCCESS` exists)."""
    run_dir = Path(run_dir)
    out: dict[str, Path] = {}
    featurizer = None
    ds: LoadedDataset | None = None
    for mode in modes:
        fdir = features_dir(run_dir, dataset, mode)
        out[mode] = fdir
        if (fdir / "_SUCCESS").is_file():
            continue
        files = sorted((run_dir / "candidates" / dataset / mode).glob("part-*.parquet"))
        if not files:
            raise DataError("no candidate files: run the generate stage first (or pass --synthetic)",
                            file=str(run_dir / "candidates" / dataset / mode))
        if featurizer is None:
            from ttp_ray.reward.features import Featurizer

            featurizer = Featurizer.from_config(feature_cfg)
            ds = LoadedDataset.read(run_dir / "data" / dataset)
        candidates = pa.concat_tables(pq.read_table(f) for f in files)
        _write_features(featurizer, ds, candidates, fdir)
    return out


def build_simulated_benchmark(cfg: Any, dataset: str) -> dict[str, Any]:
    """Data + simulated pools (the pipeline's stages) + cached features for `dataset` of a `PipelineConfig`.

    The dataset entry may be of any kind (synthetic, LaMP, LongLaMP) but must have `candidates: simulated`.
    """
    from ttp_ray.pipeline import stage_data, stage_generate

    d = cfg.dataset(dataset)
    if d.candidates != "simulated":
        raise DataError(f"dataset {dataset!r} has candidates={d.candidates!r}; the benchmark needs 'simulated'",
                        file="<config>", field="candidates")
    summary = stage_data(cfg, d)
    pools = stage_generate(cfg, d)
    feats = ensure_features(cfg.run_dir, dataset, cfg.training.features)
    return {"data": summary, "candidates": pools, "features": {k: str(v) for k, v in feats.items()}}


def _write_features(featurizer: Any, ds: LoadedDataset | None, candidates: pa.Table, out: Path) -> None:
    from ttp_ray.reward.features import population_context
    from ttp_ray.training.features_job import build_contexts, compute_features

    assert ds is not None
    contexts = build_contexts(featurizer, ds.profile)
    table = compute_features(featurizer, candidates, contexts, population_context(contexts.values()))
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / ".part-00000.parquet.tmp"
    pq.write_table(table, tmp)
    tmp.rename(out / "part-00000.parquet")
    (out / "_SUCCESS").write_text("ok\n")
    log.info("cached %d feature rows (%d dims) in %s", table.num_rows, featurizer.dim, out)
