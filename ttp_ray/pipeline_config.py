"""`PipelineConfig`: one YAML for the whole run (generate → train → evaluate, plus tune and serve).

Each stage keeps its own config model in `ttp_ray/<stage>/config.py`; this module only composes them, so a
section of the pipeline YAML is exactly what that stage's job reads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from ttp_ray.config import StageConfig, load_config
from ttp_ray.data.config import DatasetConfig
from ttp_ray.evaluation.config import EvaluationConfig
from ttp_ray.generation.config import GenerationConfig
from ttp_ray.training.config import TrainingConfig
from ttp_ray.tuning.config import SweepConfig

Stage = Literal["data", "generate", "train", "evaluate"]
ALL_STAGES: tuple[Stage, ...] = ("data", "generate", "train", "evaluate")


class SimulatedPolicyConfig(StageConfig):
    """The simulated policy (perturbed references): candidate pools without an LLM, for tests and sweeps."""

    quality_spread: float = Field(0.8, ge=0, le=1, description="Spread of per-candidate quality (0 = equal).")
    seed: int = Field(0, description="Seed of the simulated pools.")


class PipelineDatasetConfig(DatasetConfig):
    """A dataset of the run, plus where its candidates come from."""

    candidates: Literal["policy", "simulated"] = Field(
        "policy", description="`policy`: the LLM engine of the `generation` section; `simulated`: perturbed "
        "references (no LLM; seconds instead of minutes).")
    simulated: SimulatedPolicyConfig = Field(default_factory=SimulatedPolicyConfig)
    optional: bool = Field(False, description="Skip (with a note) instead of failing when the input files are "
                           "missing — e.g. the shared commit data on a machine that does not have it.")
    training: dict[str, Any] = Field(
        default_factory=dict, description="Overrides of the run's `training` section for this dataset only, "
        "merged key by key (e.g. a pool-aware feature spec for a real task beside synthetic ones); validated as "
        "a `training` section.")


class RayConfig(StageConfig):
    """How entrypoints reach Ray: attach to `address` (or $RAY_ADDRESS under `ray job submit`), else start locally."""

    address: str | None = Field(None, description="Cluster address; None = $RAY_ADDRESS or a new local cluster.")
    num_cpus: int | None = Field(None, ge=1, description="Logical CPUs of a new local cluster (None = all).")
    object_store_memory_mb: int | None = Field(None, ge=64, description="Object store of a new local cluster.")

    def init_kwargs(self) -> dict[str, int]:
        """`ray.init` sizing for a cluster we start (init_ray drops them when attaching to an existing one)."""
        kw = {"num_cpus": self.num_cpus}
        if self.object_store_memory_mb:
            kw["object_store_memory"] = self.object_store_memory_mb * 1024**2
        return {k: v for k, v in kw.items() if v}


class PipelineConfig(StageConfig):
    """The whole run. Relative paths are resolved against the current working directory."""

    run_dir: Path = Field(Path("runs/demo"), description="Where every stage writes; stages skip finished work.")
    datasets: list[PipelineDatasetConfig] = Field(
        default_factory=lambda: [PipelineDatasetConfig()], min_length=1, description="Datasets, in order.")
    stages: list[Stage] = Field(list(ALL_STAGES), description="Stages to run, in pipeline order.")
    ray: RayConfig = Field(default_factory=RayConfig)
    generation: GenerationConfig = Field(default_factory=GenerationConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    tuning: SweepConfig = Field(default_factory=SweepConfig)

    @field_validator("run_dir")
    @classmethod
    def _absolute_run_dir(cls, v: Path) -> Path:
        # made absolute here, in the driver: Ray workers may run in another directory (a job's working_dir),
        # and Ray Train / Tune reject relative storage paths
        return v.expanduser().absolute()

    @model_validator(mode="after")
    def _check_ns(self) -> PipelineConfig:
        """One source for the pool size: `evaluation.ns` defaults to 1, 2, 4, … up to `generation.n_candidates`
        (and n itself); an explicit N above the pool size is an error (was: silently clipped to the pool)."""
        n = self.generation.n_candidates
        if "ns" not in self.evaluation.model_fields_set:
            self.evaluation.ns = default_ns(n)
        elif max(self.evaluation.ns) > n:
            raise ValueError(f"evaluation.ns: N = {max(self.evaluation.ns)} is larger than the pools it selects "
                             f"from (generation.n_candidates = {n}); use N <= {n}, or leave evaluation.ns out "
                             f"to get {default_ns(n)}")
        return self

    @model_validator(mode="after")
    def _one_golden(self) -> PipelineConfig:
        """One golden score per run: the RMs regress it, the evaluation curves and the sweep score with it. Set
        it in any one of `training`, `evaluation`, `tuning` (or several, equal) and the others follow; two
        different values are an error (was: three independent settings, nothing checked they agree)."""
        sections = {"training": self.training, "evaluation": self.evaluation, "tuning": self.tuning}
        explicit = {k: sec.golden for k, sec in sections.items() if "golden" in sec.model_fields_set}
        if len(set(explicit.values())) > 1:
            said = ", ".join(f"{k}.golden = {v}" for k, v in explicit.items())
            raise ValueError(f"golden is set differently in two sections ({said}); a run has one golden score: "
                             "set it once (e.g. training.golden) and the other sections follow")
        golden = next(iter(explicit.values()), None)
        if golden is not None:
            for sec in sections.values():
                sec.golden = golden
        return self

    @model_validator(mode="after")
    def _check_dataset_training(self) -> PipelineConfig:
        for d in self.datasets:
            if d.training:
                try:
                    self.training_for(d)
                except ValidationError as e:
                    why = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
                    raise ValueError(f"datasets[{d.name!r}].training: {why}") from None
        return self

    def training_for(self, d: PipelineDatasetConfig) -> TrainingConfig:
        """The `training` section with dataset `d`'s overrides merged in."""
        if not d.training:
            return self.training
        return TrainingConfig.model_validate(merge_overrides(self.training.model_dump(), d.training))

    def dataset(self, name: str) -> PipelineDatasetConfig:
        for d in self.datasets:
            if d.name == name:
                return d
        raise KeyError(f"no dataset named {name!r}; have {[d.name for d in self.datasets]}")


def merge_overrides(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """`base` with `over` merged in key by key (nested dicts merge, everything else replaces)."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merge_overrides(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def default_ns(n: int) -> list[int]:
    """The Best-of-N grid for pools of `n`: powers of two below n, then n (`default_ns(12)` = [1, 2, 4, 8, 12])."""
    return [2**k for k in range(n.bit_length()) if 2**k < n] + [n]


def load_pipeline_config(path: str | Path | None, overrides: list[str] | None = None) -> PipelineConfig:
    """Load a pipeline YAML (safe_load) with dotted `key=value` overrides, strictly validated."""
    return load_config(PipelineConfig, path, overrides)
