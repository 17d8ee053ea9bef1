"""Dispatch a `DatasetConfig` to its loader, and the `ttp load` entry point."""

from __future__ import annotations

import logging
from pathlib import Path

from ttp_ray.config import dump_resolved
from ttp_ray.data.config import DatasetConfig
from ttp_ray.data.dataset import LoadedDataset, RejectedLoadError
from ttp_ray.data.io import write_table
from ttp_ray.data.lamp import load_lamp
from ttp_ray.data.longlamp import load_longlamp
from ttp_ray.data.schema import ERRORS
from ttp_ray.data.synthetic import write_synthetic
from ttp_ray.errors import DataError

log = logging.getLogger(__name__)

__all__ = ["load_dataset", "run_load"]


def load_dataset(cfg: DatasetConfig, work_dir: str | Path) -> LoadedDataset:
    """Load the dataset `cfg` describes; the synthetic benchmark is first written as LaMP files under
    `work_dir/source/` (so it goes through exactly the same loader as real LaMP data)."""
    missing = cfg.missing_files()
    if missing:
        field = missing[0].split("`")[1]
        raise DataError("; ".join(missing), file=str(getattr(cfg, field)), field=field)
    limits = {"max_users": cfg.max_users, "max_queries_per_user": cfg.max_queries_per_user,
              "max_profile_items": cfg.max_profile_items, "strict": cfg.strict, "max_error_rate": cfg.max_error_rate}
    if cfg.kind == "synthetic":
        paths = write_synthetic(cfg.synthetic, Path(work_dir) / "source")
        return load_lamp(paths["questions"], paths["outputs"], name=cfg.name, task=cfg.task, **limits)
    if cfg.kind == "lamp":
        assert cfg.questions is not None  # enforced by DatasetConfig
        return load_lamp(cfg.questions, cfg.outputs, name=cfg.name, task=cfg.task, **limits)
    assert cfg.path is not None and cfg.longlamp_task is not None  # enforced by DatasetConfig
    return load_longlamp(cfg.path, task=cfg.longlamp_task, name=cfg.name, **limits)


def run_load(cfg: DatasetConfig, out_dir: str | Path) -> LoadedDataset:
    """CLI entry (`ttp load`): load, write `{users,profile,queries,errors}.parquet` + `summary.json` + the
    resolved config under `out_dir` (i.e. `{run_dir}/data/{dataset}`), and print the counts.

    A rejected load (no valid query, or above `max_error_rate`) still writes `errors.parquet` (but no
    `summary.json`, so a rerun loads again) and raises a `DataError` that names it.
    """
    out = Path(out_dir)
    try:
        ds = load_dataset(cfg, out)
    except RejectedLoadError as e:
        if not e.errors.num_rows:
            raise
        path = write_table(e.errors, out / "errors.parquet", ERRORS)
        raise DataError(f"{e.reason}; rejected records: {path}", file=e.file, field=e.field) from None
    ds.write(out)
    dump_resolved(cfg, out)
    s = ds.summary()
    print(f"dataset {s['name']!r} (task {s['task']}) -> {out}")
    print(f"  users: {s['n_users']}  profile items: {s['n_profile_items']}  queries: {s['n_queries']} "
          f"({s['n_queries_with_reference']} with a reference)")
    errors_note = f" -> see {out / 'errors.parquet'}" if s["n_errors"] else ""
    print(f"  errors (skipped records): {s['n_errors']}{errors_note}")
    return ds
