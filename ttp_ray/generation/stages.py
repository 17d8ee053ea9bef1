"""The two Ray Data stages of candidate generation, as callable classes (one instance per actor).

`PromptStage` (CPU actors): reads a row group of the pending-queries file, then retrieval + template -> one
prompt per query, or the reason it cannot be built. (The input dataset is a list of row-group numbers made on
the driver, not `read_parquet`: its file-listing task needs a whole CPU, which the actor pools of a 2-CPU node
have already reserved — a deadlock measured here.)
`CandidateStage` (engine actors): n samples per prompt -> N CANDIDATES rows per query (cand_idx 0..N-1) ->
golden ROUGE vs the reference -> committed as one atomic part file; returns one summary row per query.

Why the engine actor commits its own part instead of a downstream `write_parquet`: Ray Data may split or
merge blocks between operators, so a separate writer could store half of a query's candidates before a crash,
and a retried task would write its rows a second time. Committing the candidates of whole queries in the call
that produced them, under a name derived from those queries, makes every commit all-or-nothing and every
retry idempotent. Only small summary rows flow back to the driver.

This module is imported in the engine actor's process: keep bm25s/numba out of its top level (they break the
vLLM CPU engine's spawned worker); retrieval is imported inside `PromptStage`.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ttp_ray.data.schema import CANDIDATES
from ttp_ray.generation.plan import WORK
from ttp_ray.policy.engines.base import EngineError, Generation, query_seed

log = logging.getLogger(__name__)

__all__ = ["PROMPTED", "SUMMARY", "CandidateStage", "PromptStage", "candidates_table", "process_cpu_seconds"]

# WORK rows plus the prompt (or why there is none).
PROMPTED = pa.schema(
    [
        *WORK,
        pa.field("prompt", pa.string(), nullable=True),
        pa.field("n_prompt_tokens", pa.int32(), nullable=True),
        pa.field("error_field", pa.string(), nullable=True),
        pa.field("error", pa.string(), nullable=True),
    ]
)

# One row per query, streamed back to the driver for progress, the summary and errors.parquet.
SUMMARY = pa.schema(
    [
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("query_id", pa.string(), nullable=False),
        pa.field("n_candidates", pa.int32(), nullable=False),  # 0 when the query failed
        pa.field("num_tokens", pa.int64(), nullable=False),
        pa.field("prompt_tokens", pa.int64(), nullable=False),
        pa.field("engine_s", pa.float64(), nullable=False),  # this query's share of its batch's engine time
        pa.field("done_at", pa.float64(), nullable=False),  # wall clock (epoch s) when its batch was committed
        pa.field("cpu_s", pa.float64(), nullable=False),  # its share of the actor's CPU time (engine children too)
        pa.field("error_field", pa.string(), nullable=True),
        pa.field("error", pa.string(), nullable=True),
    ]
)

_PROFILE_COLUMNS = ["user_id", "item_id", "input", "output", "position"]


class PromptStage:
    """Builds the RAG prompt of each query (cached per-user indexes live as long as the actor)."""

    def __init__(
        self, pending_path: str, profile_path: str, policy: dict[str, Any], model: str, profile_in_memory_mb: int
    ) -> None:
        from ttp_ray.policy.config import PolicyConfig
        from ttp_ray.policy.rag import RagPolicy, load_tokenizer

        self._rag_cls = RagPolicy
        self.pending = pq.ParquetFile(pending_path)
        self.cfg = PolicyConfig.model_validate(policy)
        self.tokenizer = load_tokenizer(model)
        self.profile_path = profile_path
        self._encoder = None
        whole = os.path.getsize(profile_path) <= profile_in_memory_mb * 2**20
        self.policy = self._policy(pq.read_table(profile_path, columns=_PROFILE_COLUMNS)) if whole else None

    def _policy(self, profile: pa.Table) -> Any:
        if self.cfg.retrieval.method == "dense" and self._encoder is None:
            from ttp_ray.policy.retrieval import DenseEncoder

            self._encoder = DenseEncoder(self.cfg.retrieval.encoder)
        return self._rag_cls(profile, self.cfg, self.tokenizer, encoder=self._encoder)

    def __call__(self, groups: pa.Table) -> pa.Table:
        """`groups`: a `row_group` column of the pending file -> PROMPTED rows of those queries."""
        batch = self.pending.read_row_groups(groups["row_group"].to_pylist(), columns=WORK.names)
        return self.prompts(batch)

    def prompts(self, batch: pa.Table) -> pa.Table:
        """WORK rows -> PROMPTED rows."""
        from ttp_ray.policy.prompts import PromptTooLongError

        policy = self.policy
        if policy is None:  # large profile: read only this batch's users
            users = sorted(set(batch["user_id"].to_pylist()))
            policy = self._policy(pq.read_table(self.profile_path, columns=_PROFILE_COLUMNS,
                                                filters=[("user_id", "in", users)]))
        def one(row: dict[str, Any]) -> tuple[str | None, int | None, str | None, str | None]:
            try:
                fp = policy.build(row["user_id"], row["task"], row["query_text"], query_input=row["input"],
                                  exclude_item_id=row["exclude_item_id"])
            except PromptTooLongError as e:
                return None, None, "query_text", str(e)
            return fp.text, fp.n_tokens, None, None

        built = [one(row) for row in batch.select(WORK.names).to_pylist()]
        extra = [pa.array([b[i] for b in built], PROMPTED.field(name).type)
                 for i, name in enumerate(("prompt", "n_prompt_tokens", "error_field", "error"))]
        return pa.Table.from_arrays([batch[name] for name in WORK.names] + extra, schema=PROMPTED)


class CandidateStage:
    """Samples `n` candidates per prompt with one engine, scores them, commits them; returns SUMMARY rows."""

    def __init__(self, engine: dict[str, Any], n: int, mode: str, out_dir: str, epoch: int) -> None:
        from ttp_ray.policy.config import EngineConfig
        from ttp_ray.policy.engines import build_engine

        self.cfg = EngineConfig.model_validate(engine)
        self.engine = build_engine(self.cfg)
        self.n, self.mode, self.out_dir, self.epoch = n, mode, out_dir, epoch

    def __call__(self, batch: pa.Table) -> pa.Table:
        from ttp_ray.generation.store import commit_part

        rows = batch.to_pylist()
        todo = [r for r in rows if r["error"] is None]
        cpu0 = process_cpu_seconds()
        t0 = time.perf_counter()
        gens, failures = self._generate(todo)
        engine_s = (time.perf_counter() - t0) / max(len(todo), 1)
        for r, reason in zip(todo, failures, strict=True):
            if reason is not None:
                r["error_field"], r["error"] = "prompt", reason
        done = [(r, g) for r, g in zip(todo, gens, strict=True) if g is not None]
        if done:
            commit_part(candidates_table([r for r, _ in done], [g for _, g in done], self.mode),
                        self.out_dir, epoch=self.epoch)
        by_key = {(r["user_id"], r["query_id"]): g for r, g in done}
        now = time.time()
        cpu_s = (process_cpu_seconds() - cpu0) / max(len(rows), 1)
        return pa.Table.from_pylist([_summary(r, by_key.get((r["user_id"], r["query_id"])), engine_s, now, cpu_s)
                                     for r in rows], schema=SUMMARY)

    def _generate(self, rows: list[dict[str, Any]]) -> tuple[list[list[Generation] | None], list[str | None]]:
        """Generate for all rows; an invalid prompt (ValueError) fails only its own query.

        Any other exception means the engine itself failed: it propagates, the dataset fails loudly, and a
        rerun resumes from the committed parts.
        """
        if not rows:
            return [], []
        prompts = [r["prompt"] for r in rows]
        seeds = [query_seed(self.cfg.seed, r["query_id"]) for r in rows]
        try:
            return list(self.engine.generate(prompts, self.n, seeds=seeds)), [None] * len(rows)
        except EngineError:
            raise
        except ValueError:
            if len(rows) == 1:
                return [None], [_reason()]
        gens: list[list[Generation] | None] = []
        reasons: list[str | None] = []
        for p, s in zip(prompts, seeds, strict=True):  # isolate the offending prompt(s)
            try:
                gens.append(self.engine.generate([p], self.n, seeds=[s])[0])
                reasons.append(None)
            except ValueError:
                gens.append(None)
                reasons.append(_reason())
        return gens, reasons


def _reason() -> str:
    import sys

    e = sys.exc_info()[1]
    return f"engine rejected the prompt: {type(e).__name__}: {e}"


def process_cpu_seconds() -> float:
    """CPU time of this process and its live children (vLLM's engine core runs in a child process)."""
    try:
        import psutil  # shipped with ray[default]
    except ImportError:  # pragma: no cover
        return time.process_time()
    proc = psutil.Process()
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            t = p.cpu_times()
        except psutil.Error:  # a child that just exited
            continue
        total += t.user + t.system
    return total


def _summary(row: dict[str, Any], gens: Sequence[Generation] | None, engine_s: float, done_at: float,
             cpu_s: float) -> dict[str, Any]:
    ok = gens is not None
    return {
        "user_id": row["user_id"],
        "query_id": row["query_id"],
        "n_candidates": len(gens) if ok else 0,
        "num_tokens": sum(g.num_tokens for g in gens) if ok else 0,
        "prompt_tokens": row["n_prompt_tokens"] or 0,
        "engine_s": engine_s if row["error"] is None else 0.0,
        "done_at": done_at,
        "cpu_s": cpu_s,
        "error_field": None if ok else row["error_field"],
        "error": None if ok else row["error"],
    }


def candidates_table(rows: Sequence[dict[str, Any]], gens: Sequence[Sequence[Generation]], mode: str) -> pa.Table:
    """CANDIDATES rows (cand_idx 0..N-1 per query) with golden ROUGE-1/L against each row's reference."""
    from ttp_ray.scoring.rouge import rouge_f1

    cols: dict[str, list[Any]] = {name: [] for name in CANDIDATES.names}
    refs: list[str | None] = []
    for row, outs in zip(rows, gens, strict=True):
        for k, g in enumerate(outs):
            cols["user_id"].append(row["user_id"])
            cols["query_id"].append(row["query_id"])
            cols["cand_idx"].append(k)
            cols["mode"].append(mode)
            cols["query_text"].append(row["query_text"])
            cols["text"].append(g.text.strip())
            cols["num_tokens"].append(g.num_tokens)
            cols["logprob"].append(g.logprob)
            refs.append(row["reference"])
    known = [i for i, r in enumerate(refs) if r is not None]
    r1: list[float | None] = [None] * len(refs)
    rl: list[float | None] = [None] * len(refs)
    if known:
        s1, sl = rouge_f1([cols["text"][i] for i in known], [refs[i] for i in known])
        for j, i in enumerate(known):
            r1[i], rl[i] = float(s1[j]), float(sl[j])
    cols["rouge1"], cols["rougeL"] = r1, rl
    return pa.Table.from_pydict(cols, schema=CANDIDATES)
