"""The whole run: data → generate (rm_train, eval) → train RMs + score → evaluate → combined report.

Every stage is resumable and skips finished work, so rerunning `ttp pipeline` / `jobs/pipeline.py` after a
crash picks up where it stopped. Stage functions live in their own packages; this module only sequences them.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ttp_ray.config import dump_resolved
from ttp_ray.console import say, show
from ttp_ray.pipeline_config import PipelineConfig, PipelineDatasetConfig, merge_overrides

log = logging.getLogger(__name__)

MODES = ("rm_train", "eval")
_MARK = {True: "ok ", False: "NO ", None: "n/m", "not resolved": "n/r"}  # n/m: not measurable on this data;
# n/r: not resolved (ahead on the point estimate, but the paired interval over users reaches 0)



SETTINGS_FILE = "_settings.json"  # the settings a stage's outputs were made with (the resume rule)


def _settings_match(out: Path, fp: dict[str, Any], done: Path, label: str) -> bool:
    """True when `done` exists and `out/_settings.json` records exactly `fp`; else say what changed (when a
    previous run left a record)."""
    marker = out / SETTINGS_FILE
    old = json.loads(marker.read_text()) if marker.is_file() else None
    if old == fp and done.is_file():
        return True
    if old is not None and old != fp:
        changed = sorted(k for k in {*fp, *old} if fp.get(k) != old.get(k))
        say(f"{label}: settings changed since the last run ({', '.join(changed)}), rerunning")
    elif old is None and done.is_file():
        say(f"{label}: no record of the settings it was made with, rerunning")
    return False


def _write_settings(out: Path, fp: dict[str, Any]) -> None:
    tmp = out / f".{SETTINGS_FILE}.tmp"
    tmp.write_text(json.dumps(fp, indent=1, sort_keys=True) + "\n")
    tmp.rename(out / SETTINGS_FILE)


def data_fingerprint(d: PipelineDatasetConfig) -> dict[str, Any]:
    """What the data stage's tables depend on: the dataset entry's loading settings (not how its candidates are
    made or its RMs trained)."""
    from ttp_ray.data.config import DatasetConfig

    return d.model_dump(mode="json", include=set(DatasetConfig.model_fields))


def stage_data(cfg: PipelineConfig, d: PipelineDatasetConfig) -> dict[str, Any]:
    from ttp_ray.data.loaders import run_load

    out = cfg.run_dir / "data" / d.name
    fp = data_fingerprint(d)
    if _settings_match(out, fp, out / "summary.json", f"data/{d.name}"):
        say(f"data/{d.name}: done already, skipping")
        return json.loads((out / "summary.json").read_text())
    (out / "summary.json").unlink(missing_ok=True)  # a failed reload must not leave the old tables looking done
    summary = run_load(d, out).summary()
    _write_settings(out, fp)
    return summary


def _write_simulated(cfg: PipelineConfig, d: PipelineDatasetConfig, mode: str) -> dict[str, Any]:
    import hashlib

    import pyarrow.parquet as pq

    from ttp_ray.data.dataset import LoadedDataset
    from ttp_ray.data.simulated import simulate_pools

    out = cfg.run_dir / "candidates" / d.name / mode
    data_dir = cfg.run_dir / "data" / d.name
    g = cfg.generation
    n = g.n_candidates if mode == "eval" else g.rm_train.candidates_per_item
    items = None if mode == "eval" else g.rm_train.items_per_user
    fp = {"n": n, "items_per_user": items, "simulated": d.simulated.model_dump(mode="json"),
          "data": {name: hashlib.sha256((data_dir / name).read_bytes()).hexdigest()
                   for name in ("profile.parquet", "queries.parquet")}}
    # the part's name carries the settings' hash, so the RM stage's fingerprint (part names) sees a change too
    done = out / f"part-simulated-{hashlib.sha256(json.dumps(fp, sort_keys=True).encode()).hexdigest()[:12]}.parquet"
    if _settings_match(out, fp, done, f"candidates/{d.name}/{mode}"):
        say(f"candidates/{d.name}/{mode}: done already, skipping")
        return {"candidates": pq.read_metadata(done).num_rows, "skipped": True}
    ds = LoadedDataset.read(data_dir)
    table = simulate_pools(ds, mode=mode, n_candidates=n, max_items_per_user=items,
                           quality_spread=d.simulated.quality_spread, seed=d.simulated.seed)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("part-simulated*.parquet"):  # the pools of other settings
        old.unlink()
    tmp = out / ".part-simulated.parquet.tmp"
    pq.write_table(table, tmp)
    tmp.rename(done)
    _write_settings(out, fp)
    say(f"candidates/{d.name}/{mode}: {table.num_rows} simulated candidates")
    return {"candidates": table.num_rows, "skipped": False}


def stage_generate(cfg: PipelineConfig, d: PipelineDatasetConfig) -> dict[str, Any]:
    if d.candidates == "simulated":
        return {mode: _write_simulated(cfg, d, mode) for mode in MODES}
    from ttp_ray.generation.pipeline import run_generation

    return {mode: run_generation(cfg.run_dir, d.name, cfg.generation, mode) for mode in MODES}


def stage_train(cfg: PipelineConfig, d: PipelineDatasetConfig) -> dict[str, Any]:
    from ttp_ray.training.run import run_train

    summary = run_train(cfg.run_dir, d.name, cfg.training_for(d))
    if summary.get("retrained_because"):
        say(f"rm/{d.name}: retrained, changed since the last run: {', '.join(summary['retrained_because'])}")
    variants = summary.get("variants", {})
    if variants and all(v == "skipped" for v in variants.values()):
        say(f"rm/{d.name}: trained with these settings already, skipping")
    return summary


def stage_evaluate(cfg: PipelineConfig, d: PipelineDatasetConfig) -> dict[str, Any]:
    from ttp_ray.evaluation.job import run_evaluate

    run = cfg.run_dir
    return run_evaluate(run / "candidates" / d.name / "eval", run / "scores" / d.name / "scores.parquet",
                        run / "eval" / d.name, cfg.evaluation, d.name,
                        profile_path=run / "data" / d.name / "profile.parquet")


STAGES = {"data": stage_data, "generate": stage_generate, "train": stage_train, "evaluate": stage_evaluate}


def run_pipeline(cfg: PipelineConfig) -> dict[str, Any]:
    """Run `cfg.stages` for every dataset, then write the combined `report.json` / `report.md` in `run_dir`.

    Returns the combined report (or `{}` when the evaluate stage did not run).
    """
    from ttp_ray.evaluation.claims import check_claims, render_claims
    from ttp_ray.evaluation.render import render_table
    from ttp_ray.evaluation.report import merge_reports

    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    dump_resolved(cfg, cfg.run_dir, "pipeline.resolved.yaml")
    reports, timings = [], {}
    for d in cfg.datasets:
        missing = d.missing_files()
        if missing:
            if d.optional:
                say(f"dataset {d.name!r} skipped (optional): {'; '.join(missing)}")
                continue
            raise FileNotFoundError(f"dataset {d.name!r}: {'; '.join(missing)}")
        for stage in cfg.stages:
            t0 = time.perf_counter()
            say(f"── {stage} · {d.name}")
            result = STAGES[stage](cfg, d)
            timings[f"{d.name}/{stage}"] = round(time.perf_counter() - t0, 1)
            if stage == "evaluate":
                reports.append(result)
            say(f"   {stage} · {d.name} finished in {timings[f'{d.name}/{stage}']} s")
    (cfg.run_dir / "timings.json").write_text(json.dumps(timings, indent=1) + "\n")
    if not reports:
        return {}
    merged = merge_reports(reports)
    merged["timings_s"] = timings
    merged["claims"] = {name: check_claims(r) for name, r in merged["datasets"].items()}
    (cfg.run_dir / "report.json").write_text(json.dumps(merged, indent=1, allow_nan=False) + "\n")
    table = render_table(merged)
    md = ["# ttp-ray run report", "", f"Run directory `{cfg.run_dir}`.", "", "```", table, "```", ""]
    md += [*render_claims(merged["claims"]), ""]
    for name in merged["datasets"]:
        md.append(f"- {name}: [eval/{name}/report.md](eval/{name}/report.md)")
    (cfg.run_dir / "report.md").write_text("\n".join(md) + "\n")
    show(table)
    for name, claims in merged["claims"].items():
        held = sum(bool(c["passed"]) for c in claims)
        show(f"claims on {name}: {held}/{len(claims)} hold"
             + "".join(f"\n  {_MARK[c.get('mark') or c['passed']]} {c['claim']}: {c['detail']}"
                       for c in claims))
    say(f"report: {cfg.run_dir / 'report.md'}")
    return merged


def run_seed_spread(cfg: PipelineConfig, seeds: Sequence[int], gen_seeds: Sequence[int] | None = None) -> dict[str, Any]:
    """Per generation seed (default: the config's own), data + generate once, then train + evaluate per RM seed;
    write `{run_dir}/seeds/summary.{json,md}` (`ttp_ray.evaluation.seeds`)."""
    from ttp_ray.evaluation.seeds import gen_run_dir, link_shared, render_seed_table, summarize_spread

    if not seeds:
        raise ValueError("give at least one seed")
    base_gen = cfg.generation.engine.seed
    reports: dict[tuple[int, int], dict[str, Any]] = {}
    for g in (list(gen_seeds) if gen_seeds else [base_gen]):
        generation = cfg.generation.model_copy(
            update={"engine": cfg.generation.engine.model_copy(update={"seed": int(g)})})
        gcfg = cfg.model_copy(update={"run_dir": gen_run_dir(cfg.run_dir, int(g), base_gen),
                                      "generation": generation})
        run_pipeline(gcfg.model_copy(update={"stages": ["data", "generate"]}))
        for s in seeds:
            sub = link_shared(gcfg.run_dir, s)
            # every seed the RMs use: splits/initialisation/batch order of both stages
            seeded = {"seed": int(s), "user_stage": {"seed": int(s)}}
            training = type(cfg.training).model_validate(merge_overrides(cfg.training.model_dump(), seeded))
            # one merge rule for the run's section and the per-dataset overrides: the seeds win over both
            datasets = [d.model_copy(update={"training": merge_overrides(d.training, seeded)}) if d.training else d
                        for d in cfg.datasets]
            reports[(int(g), int(s))] = run_pipeline(gcfg.model_copy(update={
                "run_dir": sub, "stages": ["train", "evaluate"], "training": training, "datasets": datasets}))
    summary = summarize_spread(reports)
    out = Path(cfg.run_dir) / "seeds"
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    table = render_seed_table(summary)
    (out / "summary.md").write_text(f"# Seed spread\n\n```\n{table}\n```\n")
    show(table)
    return summary
