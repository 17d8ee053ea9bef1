"""Evaluation: exact Best-of-N, c_N theory, ρ/α/β diagnostics, the scaling law, allocation, plots, report.

Pure numpy/scipy/pyarrow; `ray` is imported only inside `job.compute_stats_ray`.
"""

from ttp_ray.evaluation.bon import (
    Pools,
    aggregate,
    exact_bon,
    exact_bon_matrix,
    montecarlo_agreement,
    montecarlo_bon,
)
from ttp_ray.evaluation.config import AllocationConfig, EvaluationConfig
from ttp_ray.evaluation.diagnostics import (
    Correlation,
    FailureModes,
    failure_modes,
    query_correlation,
    user_correlation,
)
from ttp_ray.evaluation.job import run_evaluate
from ttp_ray.evaluation.law import fit_quality, paper_law, per_query_law
from ttp_ray.evaluation.render import render_table
from ttp_ray.evaluation.report import build_report, merge_reports, write_report
from ttp_ray.evaluation.theory import c_n, expected_max_normal, lemma42_gain, oracle_prediction

__all__ = [
    "AllocationConfig",
    "Correlation",
    "EvaluationConfig",
    "FailureModes",
    "Pools",
    "aggregate",
    "build_report",
    "c_n",
    "exact_bon",
    "exact_bon_matrix",
    "expected_max_normal",
    "failure_modes",
    "fit_quality",
    "lemma42_gain",
    "merge_reports",
    "montecarlo_agreement",
    "montecarlo_bon",
    "oracle_prediction",
    "paper_law",
    "per_query_law",
    "query_correlation",
    "render_table",
    "run_evaluate",
    "user_correlation",
    "write_report",
]
