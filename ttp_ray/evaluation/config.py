"""`EvaluationConfig`: how Best-of-N curves, diagnostics, the scaling law and the report are computed."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from ttp_ray.config import StageConfig

GoldenName = Literal["rouge1", "rougeL"]


class AllocationConfig(StageConfig):
    """Compute-optimal N per user (see `ttp_ray.evaluation.allocation`)."""

    enabled: bool = Field(True, description="Compute the per-user allocation section of the report.")
    lam: float = Field(
        0.0,
        ge=0.0,
        description="λ: price of one extra candidate in golden-score units; steps whose marginal gain per "
        "candidate is <= λ are not taken (0 = spend the whole budget if it helps).",
    )
    budgets: list[int] = Field(
        [2, 4, 8],
        description="Average candidates per query to compare at; uniform N=b is the equal-compute baseline.",
    )
    predictor: Literal["user_law", "per_query_law"] = Field(
        "user_law",
        description="Predicted per-user gain curve: ρ_u · G_u(N) (user_law) or the mean of ρ_q · G_q(N) over "
        "the user's queries (per_query_law).",
    )

    @field_validator("budgets")
    @classmethod
    def _budgets_positive(cls, v: list[int]) -> list[int]:
        if not v:
            raise ValueError("`allocation.budgets` must not be empty")
        bad = [b for b in v if b < 1]
        if bad:
            raise ValueError(f"`allocation.budgets` must be >= 1 candidate per query, got {bad}")
        return sorted(set(v))


class EvaluationConfig(StageConfig):
    """Evaluation stage settings.

    Curves: `ns`, `golden`, `aggregate`. Diagnostics: `correlation`, `user_rho`, `collapse_threshold`,
    `hacking_threshold`. Paper protocol: `montecarlo`, `mc_repeats`, `seed`. Output: `plots`, `scatter_methods`.
    Execution: `ray_min_candidates`.
    """

    ns: list[int] = Field(
        [1, 2, 4, 8, 16, 30],
        description="Best-of-N grid. In a pipeline config it defaults to 1, 2, 4, … up to "
        "generation.n_candidates, and an N above that is an error; evaluating other pools directly clips N to "
        "the largest pool.",
    )
    golden: GoldenName = Field("rouge1", description="Golden score driving diagnostics, the law and the plots.")
    aggregate: Literal["query", "user"] = Field(
        "query",
        description="Headline curve: mean over queries (LaMP convention) or mean over users of per-user means.",
    )
    correlation: Literal["pearson", "spearman"] = Field(
        "pearson", description="Correlation used for ρ_q, ρ_u, α, β and the law (Lemma 4.2 is Pearson)."
    )
    user_rho: Literal["pooled", "mean_query", "within"] = Field(
        "pooled",
        description="ρ_u: pooled over all the user's candidates, mean of the user's ρ_q, or pooled after "
        "centring each query (removes between-query difficulty).",
    )
    collapse_threshold: float = Field(0.1, ge=-1.0, le=1.0, description="User collapsed when ρ_u < this.")
    hacking_threshold: float = Field(0.0, ge=-1.0, le=1.0, description="Query hacked when ρ_q < this.")
    flat_fraction: float = Field(
        0.05,
        gt=0.0,
        description="An observed curve whose range is below this share of the oracle gain is 'flat': R² is "
        "ill-posed there and reported as null (max abs error still given).",
    )
    montecarlo: bool = Field(True, description="Also run the paper's Monte-Carlo protocol (for comparison).")
    mc_repeats: int = Field(3, ge=1, description="Repeats of the paper's Monte-Carlo protocol per (query, N).")
    seed: int = Field(0, description="Seed of the Monte-Carlo protocol and of MBR's subset draws.")
    mbr_subsets: int = Field(
        200, ge=0, description="N-subsets drawn per pool and N to evaluate MBR (its scores depend on the subset; "
        "0 = leave MBR out).")
    mbr_metric: Literal["rouge1", "rougeL"] = Field("rouge1", description="Similarity MBR's consensus uses.")
    paired_resamples: int = Field(
        2000, ge=0, description="Cluster-bootstrap resamples over users for the paired comparison of each RM "
        "with the best training-free selector at N = max (report `paired`, the claims); 0 = off.")
    plots: bool = Field(True, description="Write PNG plots next to the report.")
    scatter_methods: tuple[str, str] = Field(
        ("user-det", "user-prob"),
        description="Methods compared in the per-query correlation scatter and the collapsed-user plot.",
    )
    ray_min_candidates: int = Field(
        2_000_000,
        ge=0,
        description="At or above this many candidates, per-user curves and correlations run as Ray Data "
        "map_groups tasks; below it everything runs in-process.",
    )
    allocation: AllocationConfig = Field(default_factory=AllocationConfig)

    @field_validator("ns")
    @classmethod
    def _ns_valid(cls, v: list[int]) -> list[int]:
        if not v:
            raise ValueError("`ns` must not be empty")
        bad = [n for n in v if n < 1]
        if bad:
            raise ValueError(f"`ns` values must be >= 1, got {bad}")
        return sorted(set(v))

    @model_validator(mode="after")
    def _scatter_distinct(self) -> EvaluationConfig:
        if self.scatter_methods[0] == self.scatter_methods[1]:
            raise ValueError(f"`scatter_methods` must name two different methods, got {self.scatter_methods}")
        return self
