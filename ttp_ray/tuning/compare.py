"""Held-out check of a sweep: re-train named user-stage configurations and score the eval pools (test queries).

The sweep picks its winner on validation pseudo-queries; this is the number to believe. Each configuration is
trained exactly as a trial is (`train_and_score`: global head + user bank on the RM-training features, early
stopping on the validation split) and its bank then scores the test queries' pools: exact BoN at every N of
the grid, AUC over log N, α and β — for the bank (`test_*`) and for its global head alone (`test_global_*`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from ttp_ray.evaluation.config import EvaluationConfig
from ttp_ray.reward.config import UserStageConfig
from ttp_ray.training.config import GlobalStageConfig
from ttp_ray.tuning.objective import GlobalOnly, PoolScorer, SweepData, train_and_score

__all__ = ["compare_configs", "compare_markdown", "write_compare"]


def compare_configs(
    train: SweepData,
    pools: SweepData,
    configs: Mapping[str, UserStageConfig],
    *,
    global_cfg: GlobalStageConfig | None = None,
    ns: Sequence[int] | None = None,
    eval_cfg: EvaluationConfig | None = None,
) -> pd.DataFrame:
    """One row per configuration: validation metrics (`val_*`) and test-pool metrics (`test_*`, `test_global_*`).

    Args:
        train: RM-training features (what the sweep tuned on).
        pools: eval-pool features of the same dataset (users missing from `train` are scored by the global head).
        configs: name -> user-stage configuration, e.g. {"default": ..., "best": ...}.
        ns: test N grid (None: 1, 2, 4, … up to the smallest eval pool, e.g. 1..16, 30 for 30-candidate pools).
    """
    scorer = PoolScorer.pools(pools, train.user_ids, ns, eval_cfg, prefix="test_")
    glob = PoolScorer.pools(pools, train.user_ids, ns, eval_cfg, prefix="test_global_")
    rows = []
    for name, cfg in configs.items():
        out = train_and_score(train, cfg, global_cfg=global_cfg, eval_cfg=eval_cfg)
        model = out.result.model
        row = {"config": name, **scorer.score_model(model), **scorer.reference,
               **glob.score_model(GlobalOnly(model.head))}
        row.update({k: v for k, v in out.final.items() if k.startswith("val_bon_auc") or k in ("val_alpha", "val_beta")})
        rows.append(row)
    return pd.DataFrame(rows)


def compare_markdown(df: pd.DataFrame, ns: Sequence[int] | None = None) -> str:
    """A Markdown table of `compare_configs` output: utility at N (default: 1 and the two largest), AUC, α, β."""
    grid = sorted(int(c[len("test_bon_n"):]) for c in df.columns if c.startswith("test_bon_n"))
    show = list(ns) if ns is not None else sorted({grid[0], *grid[-2:]})
    head = ["config", *[f"N={n}" for n in show], "AUC", "α", "β", "global head N=" + str(show[-1]), "val AUC"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, r in df.iterrows():
        cells = [str(r["config"]), *[f"{r[f'test_bon_n{n}']:.4f}" for n in show], f"{r['test_bon_auc']:.4f}",
                 f"{r['test_alpha']:.3f}", f"{r['test_beta']:.3f}", f"{r[f'test_global_bon_n{show[-1]}']:.4f}",
                 f"{r['val_bon_auc']:.4f}"]
        lines.append("| " + " | ".join(cells) + " |")
    r0 = df.iloc[0]
    lines.append("")
    lines.append(f"Oracle at N={grid[-1]}: {r0['test_oracle_max_n']:.4f}; random selection: {r0['test_random']:.4f}.")
    return "\n".join(lines) + "\n"


def write_compare(df: pd.DataFrame, out_dir: str | Path) -> dict[str, Path]:
    out = Path(out_dir)
    paths = {"compare_csv": out / "compare.csv", "compare_md": out / "compare.md"}
    df.to_csv(paths["compare_csv"], index=False)
    paths["compare_md"].write_text(compare_markdown(df))
    return paths
