"""How well each selection signal ranks the pseudo-query pools (what every RM trains on) vs the real queries' pools.

    python benchmarks/selection_shift.py --run runs/commits17 [--dataset commits]

Reads a finished run's `data/<ds>/profile.parquet` and `candidates/<ds>/{rm_train,eval}`; for each pool and signal
computes the Pearson correlation with the golden score (mean over pools) and the share of the oracle gain of
selecting on the signal alone over the whole pool. Signals: `consensus` (MBR: mean ROUGE-1 against the other
candidates), `rouge_user` (mean ROUGE-1 against each of the user's other profile outputs), `rouge_retrieved`
(against the outputs of the 8 profile items BM25 retrieves for the query, past items only). The numbers behind the
README's "Selection" paragraph on why the RMs lean away from consensus. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from ttp_ray.policy.retrieval import BM25Index
from ttp_ray.scoring.rouge import rouge_f1
from ttp_ray.scoring.selectors import mbr_scores

SIGNALS = ("consensus", "rouge_user", "rouge_retrieved")


def _mean_rouge(texts: list[str], refs: list[str]) -> np.ndarray:
    return np.array([rouge_f1([t] * len(refs), refs)[0].mean() if refs else 0.0 for t in texts])


def pools(run: Path, ds: str, mode: str, k: int = 8) -> list[dict]:
    """One dict per pool: golden scores and every signal."""
    prof = defaultdict(list)
    for r in pq.read_table(run / "data" / ds / "profile.parquet").to_pylist():
        prof[r["user_id"]].append(r)
    rows = defaultdict(list)
    for part in sorted((run / "candidates" / ds / mode).glob("part-*.parquet")):
        for r in pq.read_table(part, columns=["user_id", "query_id", "cand_idx", "query_text", "text",
                                               "rouge1"]).to_pylist():
            rows[(r["user_id"], r["query_id"])].append(r)
    out = []
    for (u, q), rs in sorted(rows.items()):
        rs.sort(key=lambda r: r["cand_idx"])
        texts, items = [r["text"] for r in rs], prof[u]
        pos = next((it["position"] for it in items if it["item_id"] == q), None)  # a pseudo-query's own item
        past = [it for it in items if pos is None or it["position"] < pos]
        top = BM25Index([it["input"] for it in past], tokenizer="words").top_k(rs[0]["query_text"], k) if past else []
        out.append({"golden": np.array([r["rouge1"] for r in rs]), "consensus": mbr_scores(texts),
                    "rouge_user": _mean_rouge(texts, [it["output"] for it in items if it["item_id"] != q]),
                    "rouge_retrieved": _mean_rouge(texts, [past[i]["output"] for i in top])})
    return out


def summary(ps: list[dict]) -> dict[str, dict[str, float]]:
    gain = np.mean([p["golden"].max() - p["golden"].mean() for p in ps])
    res = {}
    for s in SIGNALS:
        corr = [np.corrcoef(p[s], p["golden"])[0, 1] for p in ps if p[s].std() > 0 and p["golden"].std() > 0]
        picked = np.mean([p["golden"][np.argmax(p[s])] - p["golden"].mean() for p in ps])
        res[s] = {"corr": round(float(np.mean(corr)), 4), "share": round(float(picked / gain), 4)}
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--dataset", default="commits")
    a = ap.parse_args()
    res = {mode: {"pools": len(ps), **summary(ps)} for mode in ("rm_train", "eval")
           for ps in [pools(a.run, a.dataset, mode)]}
    print(json.dumps({"benchmark": "selection_shift", "run": str(a.run), "dataset": a.dataset, **res}))


if __name__ == "__main__":
    main()
