"""Score a LaMP predictions file against a golds file, the way LaMP's `eval/evaluation.py` does.

Both files use LaMP's outputs format `{"task", "golds": [{"id", "output"}]}`. As in the official evaluator,
the id sets must be equal and texts are stripped; the figures are the arithmetic means of per-example F1
(the official script reports a bootstrap median of means, equal up to resampling noise).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ttp_ray.data.dataset import ErrorLog
from ttp_ray.data.lamp import read_outputs, resolve_task
from ttp_ray.errors import DataError
from ttp_ray.scoring.rouge import rouge_f1

__all__ = ["run_score"]


def run_score(preds_path: str | Path, golds_path: str | Path, out: str | Path | None = None) -> dict[str, Any]:
    """CLI entry (`ttp score`): mean ROUGE-1 / ROUGE-L of predictions vs golds; per-example Parquet if `out`.

    Raises:
        DataError: a malformed file or entry, different tasks, or different id sets (names a few ids).
    """
    pred_task, preds = read_outputs(Path(preds_path), ErrorLog(strict=True))
    gold_task, golds = read_outputs(Path(golds_path), ErrorLog(strict=True))
    if pred_task and gold_task and resolve_task(pred_task).name != resolve_task(gold_task).name:
        raise DataError(f"predictions are for task {pred_task!r} but golds for {gold_task!r}", file=str(preds_path),
                        field="task")
    if preds.keys() != golds.keys():
        missing = sorted(golds.keys() - preds.keys())
        extra = sorted(preds.keys() - golds.keys())
        raise DataError(
            f"prediction ids must equal gold ids: {len(missing)} missing (e.g. {missing[:3]}), "
            f"{len(extra)} unknown (e.g. {extra[:3]})", file=str(preds_path), field="golds")
    ids = sorted(golds)
    pred_texts = [preds[i].strip() for i in ids]
    gold_texts = [golds[i].strip() for i in ids]
    r1, rl = rouge_f1(pred_texts, gold_texts)
    result = {"task": gold_task or pred_task, "n": len(ids),
              "rouge-1": float(r1.mean()) if ids else 0.0, "rouge-L": float(rl.mean()) if ids else 0.0}
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table({"id": ids, "prediction": pred_texts, "reference": gold_texts,
                                 "rouge1": r1, "rougeL": rl}), out)
        result["per_example"] = str(out)
    print(f"{result['task']}: n={result['n']}  rouge-1={result['rouge-1']:.4f}  rouge-L={result['rouge-L']:.4f}")
    return result
