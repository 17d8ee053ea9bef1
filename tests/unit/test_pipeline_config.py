"""Every shipped config parses; unknown keys and bad values fail loudly; overrides and the CLI behave."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ttp_ray.errors import TTPValidationError
from ttp_ray.pipeline_config import PipelineConfig, load_pipeline_config

REPO = Path(__file__).resolve().parents[2]
PIPELINE_CONFIGS = sorted(
    [p for p in (REPO / "ttp_ray" / "configs").glob("*.yaml") if p.name != "tune_space.yaml"]
    + [p for p in (REPO / "tests" / "fixtures" / "configs").glob("*.yaml") if p.name != "invalid_keys.yaml"]
)


@pytest.mark.parametrize("path", PIPELINE_CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_parse(path: Path) -> None:
    cfg = load_pipeline_config(path)
    assert isinstance(cfg, PipelineConfig)
    assert cfg.datasets and len({d.name for d in cfg.datasets}) == len(cfg.datasets)


def test_unknown_keys_are_listed_sorted() -> None:
    with pytest.raises(TTPValidationError) as e:
        load_pipeline_config(REPO / "tests" / "fixtures" / "configs" / "invalid_keys.yaml")
    msg = str(e.value)
    assert "unknown keys: ['bogus_section', 'generation.engine.temprature', 'generation.n_candidatez']" in msg


def test_overrides_are_typed_and_validated(tmp_path: Path) -> None:
    cfg = load_pipeline_config(None, [f"run_dir={tmp_path}", "generation.n_candidates=4",
                                      "evaluation.ns=[1,2,4]"])
    assert cfg.run_dir == tmp_path and cfg.generation.n_candidates == 4 and cfg.evaluation.ns == [1, 2, 4]
    with pytest.raises(TTPValidationError, match="n_candidates"):
        load_pipeline_config(None, ["generation.n_candidates=0"])
    with pytest.raises(TTPValidationError, match="key=value"):
        load_pipeline_config(None, ["generation.n_candidates"])


def test_list_entries_take_index_overrides() -> None:
    demo = REPO / "ttp_ray" / "configs" / "demo.yaml"
    cfg = load_pipeline_config(demo, ["datasets.2.max_users=3", "datasets.-1.name=mine"])
    assert cfg.datasets[2].max_users == 3 and cfg.datasets[2].name == "mine"
    with pytest.raises(TTPValidationError, match=r"index 5 is out of range \(the list has 3 entries\)") as e:
        load_pipeline_config(demo, ["datasets.5.name=x"])
    assert e.value.parameter == "datasets.5.name"
    with pytest.raises(TTPValidationError, match="'x' must be a list index"):
        load_pipeline_config(demo, ["datasets.x.name=y"])


def test_ns_follow_the_pool_size_and_an_impossible_n_is_an_error() -> None:
    assert load_pipeline_config(None, ["generation.n_candidates=12"]).evaluation.ns == [1, 2, 4, 8, 12]
    assert load_pipeline_config(None, ["generation.n_candidates=1"]).evaluation.ns == [1]
    demo = load_pipeline_config(REPO / "ttp_ray" / "configs" / "demo.yaml")  # writes 12 once, ns derived
    assert demo.evaluation.ns == [1, 2, 4, 8, 12]
    with pytest.raises(TTPValidationError, match=r"evaluation\.ns: N = 16 is larger .*n_candidates = 12\)"):
        load_pipeline_config(None, ["generation.n_candidates=12", "evaluation.ns=[1,16]"])


def test_missing_config_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(TTPValidationError, match="config file not found"):
        load_pipeline_config(tmp_path / "nope.yaml")


def _ttp(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ttp_ray.cli", *args], capture_output=True, text=True, timeout=120)


def test_cli_help_and_clear_errors(tmp_path: Path) -> None:
    r = _ttp("--help")
    assert r.returncode == 0
    for cmd in ("generate", "train", "tune", "evaluate", "report", "serve", "plan", "pipeline", "demo", "data"):
        assert cmd in r.stdout
    r = _ttp("report", str(tmp_path))
    assert r.returncode == 2 and "no report" in r.stderr
    r = _ttp("data", "load", "--config", str(REPO / "tests" / "fixtures" / "configs" / "invalid_keys.yaml"))
    assert r.returncode == 2 and "unknown keys" in r.stderr


def test_cli_data_load_writes_the_schemas(tmp_path: Path) -> None:
    r = _ttp("data", "load", "--set", f"run_dir={tmp_path}", "--set", "datasets=[{name: s, kind: synthetic, "
             "synthetic: {n_users: 3, profile_size: 5, queries_per_user: 2}}]")
    assert r.returncode == 0, r.stderr
    out = tmp_path / "data" / "s"
    for name in ("users", "profile", "queries", "errors"):
        assert (out / f"{name}.parquet").is_file()
    import pyarrow.parquet as pq

    assert pq.read_table(out / "users.parquet").num_rows == 3
    assert pq.read_table(out / "queries.parquet").num_rows == 6


def test_pure_core_does_not_import_ray() -> None:
    code = ("import sys, ttp_ray.data, ttp_ray.data.loaders, ttp_ray.scoring.rouge, ttp_ray.evaluation.report, "
            "ttp_ray.pipeline_config; bad = [m for m in ('ray', 'vllm', 'deepspeed') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


def test_dataset_training_overrides_merge_into_that_dataset_only() -> None:
    cfg = PipelineConfig.model_validate({
        "training": {"seed": 3, "user_stage": {"epochs": 7}},
        "datasets": [{"name": "syn"},
                     {"name": "real", "training": {"features": {"blocks": [], "pool_blocks": ["consensus"]},
                                                   "user_stage": {"num_layers": 0}}}]})
    real, syn = cfg.training_for(cfg.dataset("real")), cfg.training_for(cfg.dataset("syn"))
    assert real.features.pool_blocks == ["consensus"] and real.features.blocks == []
    assert real.user_stage.num_layers == 0 and real.user_stage.epochs == 7 and real.seed == 3  # merged key by key
    assert syn is cfg.training and syn.features.pool_blocks == []
    assert real.head_config(probabilistic=True).linear_inputs == 1
    # the commit configs ship the pool-aware RM
    demo = load_pipeline_config(REPO / "ttp_ray" / "configs" / "demo.yaml")
    commits = demo.training_for(demo.dataset("commits"))
    assert commits.features.pool_blocks == ["consensus"] and commits.features.blocks == ["rouge_user"]


def test_bad_dataset_training_override_names_the_dataset() -> None:
    with pytest.raises(ValueError, match=r"datasets\['real'\]\.training.*pool_blocks"):
        PipelineConfig.model_validate({"datasets": [{"name": "real", "training": {"features": {
            "pool_blocks": ["nope"]}}}]})
    with pytest.raises(ValueError, match="blocks must name at least one"):
        PipelineConfig.model_validate({"datasets": [{"name": "real", "training": {"features": {"blocks": []}}}]})


def test_one_golden_per_run_follows_the_section_that_sets_it() -> None:
    cfg = load_pipeline_config(None, ["evaluation.golden=rougeL"])
    assert cfg.training.golden == cfg.evaluation.golden == cfg.tuning.golden == "rougeL"
    cfg = load_pipeline_config(None, ["training.golden=rougeL", "tuning.golden=rougeL"])
    assert cfg.evaluation.golden == "rougeL"
    assert load_pipeline_config(None).training.golden == "rouge1"  # default everywhere
    with pytest.raises(TTPValidationError, match=r"training.golden = rougeL, evaluation.golden = rouge1"):
        load_pipeline_config(None, ["training.golden=rougeL", "evaluation.golden=rouge1"])
