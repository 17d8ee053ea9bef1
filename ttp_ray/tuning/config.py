"""`SweepConfig`: the `tuning:` section — how many trials, how they are scheduled, what they optimise.

The search space itself lives in YAML (`ttp_ray/configs/tune_space.yaml`, parsed by `ttp_ray.tuning.space`);
this model only points at it and pins the user-stage fields the sweep does not search.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from ttp_ray.config import StageConfig

# The validation metrics a sweep can optimise. Both are Best-of-N utilities, so the mode is always "max";
# keeping the pair here is the one place metric/mode are decided (ray-notes §3.1: set them once).
METRICS: dict[str, str] = {
    "val_bon_auc": "max",  # mean exact BoN utility over log N across the N grid (whole curve, less noisy)
    "val_bon_max_n": "max",  # exact BoN utility at the largest N of the grid (the headline number)
}


class TrialResources(StageConfig):
    """Logical resources one trial reserves (a CPU trial trains one user bank on cached features)."""

    cpu: float = Field(1.0, ge=0, description="CPUs per trial.")
    gpu: float = Field(0.0, ge=0, description="GPUs per trial (fractions allowed).")

    @model_validator(mode="after")
    def _not_all_zero(self) -> TrialResources:
        # Ray rejects all-zero placement-group bundles with an obscure error; say it here instead.
        if self.cpu == 0 and self.gpu == 0:
            raise ValueError("resources_per_trial must reserve something: cpu and gpu are both 0")
        return self

    def as_dict(self) -> dict[str, float]:
        return {k: v for k, v in (("cpu", self.cpu), ("gpu", self.gpu)) if v > 0}


class AshaConfig(StageConfig):
    """ASHA (asynchronous successive halving) over epochs: `training_iteration` counts reported epochs."""

    grace_period: int = Field(2, ge=1, description="Epochs every trial gets before it can be stopped.")
    max_t: int | None = Field(
        None, ge=1, description="Epoch cap; None = the largest `epochs` the search space (or user_stage) allows."
    )
    reduction_factor: float = Field(3.0, gt=1, description="Keep the top 1/reduction_factor at each rung.")
    brackets: int = Field(1, ge=1, description="Number of brackets (1 = plain ASHA).")

    @model_validator(mode="after")
    def _grace_below_max(self) -> AshaConfig:
        if self.max_t is not None and self.grace_period > self.max_t:
            raise ValueError(f"asha.grace_period ({self.grace_period}) must be <= asha.max_t ({self.max_t})")
        return self


class SweepConfig(StageConfig):
    """Ray Tune sweep over the per-user probabilistic head, scored by exact Best-of-N on held-out queries.

    Parameters that control the search:
        search_space, user_stage, num_samples, points_to_evaluate, searcher, seed, metric.
    Parameters that control the schedule and resources:
        max_concurrent_trials, resources_per_trial, asha, time_budget_s.
    Parameters that control the objective (validation = user_stage.val_fraction of each user's queries):
        n_grid, golden.
    Outputs:
        output_dir (default `{run_dir}/tune/{dataset}`), compare_on_eval, verbose.
    """

    name: str = Field("variance-head", min_length=1, description="Experiment name (Ray Tune run name).")
    search_space: str | dict[str, Any] = Field(
        "default",
        description="'default' (the packaged tune_space.yaml), a path to a YAML file, or an inline mapping "
        "{param: {distribution: ..., ...}}.",
    )
    user_stage: dict[str, Any] = Field(
        default_factory=dict,
        description="UserStageConfig fields fixed for every trial (searched fields override them).",
    )
    num_samples: int = Field(16, ge=1, description="Number of trials (points_to_evaluate included).")
    points_to_evaluate: list[dict[str, Any]] = Field(
        default_factory=list,
        description="Configurations to try first (e.g. today's production settings), each giving a value for "
        "every searched parameter. Validated like the space.",
    )
    searcher: Literal["optuna", "random"] = Field("optuna", description="Optuna TPE, or Tune's random search.")
    seed: int = Field(0, description="Seed of the searcher and of every trial's torch RNG.")
    metric: Literal["val_bon_auc", "val_bon_max_n"] = Field(
        "val_bon_auc", description="Validation metric to maximise (see METRICS)."
    )
    max_concurrent_trials: int | None = Field(
        None, ge=1, description="Trials running at once; None = as many as the cluster's resources allow."
    )
    resources_per_trial: TrialResources = Field(default_factory=TrialResources)
    asha: AshaConfig = Field(default_factory=AshaConfig)
    time_budget_s: float | None = Field(None, gt=0, description="Stop launching trials after this many seconds.")
    verbose: int = Field(1, ge=0, le=3, description="Ray Tune console verbosity (0 = silent).")
    n_grid: list[int] | None = Field(
        None, description="N values of the validation BoN curve; None = 1, 2, 4, … up to the smallest pool size."
    )
    golden: Literal["rouge1", "rougeL"] = Field("rouge1", description="Golden score column.")
    output_dir: str | None = Field(None, description="Where tables, plot and best.yaml go; None = run_dir/tune/dataset.")
    compare_on_eval: bool = Field(
        True, description="After the sweep, re-train the default and best configurations and score the eval "
        "pools (test queries) when their features are cached: compare.csv / compare.md."
    )

    @model_validator(mode="after")
    def _check_grid(self) -> SweepConfig:
        if self.n_grid is not None:
            if not self.n_grid or any(n < 1 for n in self.n_grid):
                raise ValueError(f"n_grid must be a non-empty list of N >= 1, got {self.n_grid}")
            if sorted(set(self.n_grid)) != list(self.n_grid):
                raise ValueError(f"n_grid must be strictly increasing, got {self.n_grid}")
        return self

    @property
    def mode(self) -> str:
        return METRICS[self.metric]
