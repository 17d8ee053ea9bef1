"""The Arrow schemas every stage reads and writes (as Parquet). One module, no ad-hoc dicts between stages.

Keys: a user is `user_id`; a query is (`user_id`, `query_id`); a candidate is (`user_id`, `query_id`, `cand_idx`).
`query_id` is unique within a dataset (LaMP question ids are); pseudo-queries built from profile items for
RM training use the profile item's id.
"""

from __future__ import annotations

import pyarrow as pa

SCHEMA_VERSION = "1"

# One row per user.
USERS = pa.schema(
    [
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("n_profile", pa.int32(), nullable=False),  # profile items kept after validation
        pa.field("n_queries", pa.int32(), nullable=False),  # test queries of this user
        pa.field("dataset", pa.string(), nullable=False),
    ]
)

# One row per profile item, i.e. a past (input, output) pair of the user. `input` is the text that plays the
# role of the query (article, abstract, change description…), `output` the user's real output (headline,
# title, commit subject…). Tasks whose profiles have no pairs (LaMP-7 tweets) leave `input` empty.
PROFILE = pa.schema(
    [
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("input", pa.string(), nullable=False),
        pa.field("output", pa.string(), nullable=False),
        pa.field("date", pa.string(), nullable=True),  # YYYY-MM-DD or a bare year, as in LaMP
        pa.field("position", pa.int32(), nullable=False),  # order in the source profile (oldest first)
    ]
)

# One row per test query. `input` is the full task input as released (instruction + text); `query_text` is
# the part used for retrieval (the text after the task's marker, e.g. "article:"). `reference` is the user's
# real output when known (null for LaMP test questions).
QUERIES = pa.schema(
    [
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("query_id", pa.string(), nullable=False),
        pa.field("task", pa.string(), nullable=False),
        pa.field("input", pa.string(), nullable=False),
        pa.field("query_text", pa.string(), nullable=False),
        pa.field("reference", pa.string(), nullable=True),
    ]
)

# One row per generated candidate. `mode` is "eval" (test-query pools) or "rm_train" (pseudo-queries from the
# profile). `query_text` is carried so a reward model can read (query, candidate) without a join.
CANDIDATES = pa.schema(
    [
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("query_id", pa.string(), nullable=False),
        pa.field("cand_idx", pa.int32(), nullable=False),
        pa.field("mode", pa.string(), nullable=False),
        pa.field("query_text", pa.string(), nullable=False),
        pa.field("text", pa.string(), nullable=False),
        pa.field("num_tokens", pa.int32(), nullable=False),
        pa.field("logprob", pa.float64(), nullable=True),  # sum of token logprobs, when the engine gives it
        pa.field("rouge1", pa.float64(), nullable=True),  # golden scores vs `reference` (null if unknown)
        pa.field("rougeL", pa.float64(), nullable=True),
    ]
)

# One row per (candidate, reward model). `method` names the RM variant ("global-det", "user-prob", …).
# `sigma` is null for deterministic heads. `fallback` is true when an unknown user was scored by the global RM.
# `mu` is the score on the whole pool, as the endpoint returns it for a request holding that pool.
SCORES = pa.schema(
    [
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("query_id", pa.string(), nullable=False),
        pa.field("cand_idx", pa.int32(), nullable=False),
        pa.field("method", pa.string(), nullable=False),
        pa.field("mu", pa.float64(), nullable=False),
        pa.field("sigma", pa.float64(), nullable=True),
        pa.field("fallback", pa.bool_(), nullable=False),
        # Pool-aware RMs only (null otherwise): μ on a subset S of the pool is mu + pool_weight · (consensus_S −
        # consensus_pool), consensus = mean ROUGE-1 to the other candidates (ttp_ray.reward.pool).
        pa.field("pool_weight", pa.float64(), nullable=True),
    ]
)

# Bad input is never dropped silently: every rejected record or failed query lands here.
ERRORS = pa.schema(
    [
        pa.field("stage", pa.string(), nullable=False),  # "load", "generate", "train", …
        pa.field("file", pa.string(), nullable=True),
        pa.field("record_id", pa.string(), nullable=True),
        pa.field("field", pa.string(), nullable=True),
        pa.field("reason", pa.string(), nullable=False),
    ]
)

ALL = {
    "users": USERS,
    "profile": PROFILE,
    "queries": QUERIES,
    "candidates": CANDIDATES,
    "scores": SCORES,
    "errors": ERRORS,
}


def empty(schema: pa.Schema) -> pa.Table:
    """An empty table with `schema` (so stages always write a file, even with no rows)."""
    return schema.empty_table()


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Select and cast `table`'s columns to `schema`, failing with the missing column names."""
    missing = [n for n in schema.names if n not in table.column_names]
    if missing:
        raise ValueError(f"table is missing columns {missing}; has {table.column_names}")
    return table.select(schema.names).cast(schema)
