"""Fixtures for the policy unit tests: real commit-subject records and the bundled tokenizer (no Ray)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest


@pytest.fixture(scope="session")
def commit_records(commit_data_dir: Path) -> list[dict[str, Any]]:
    return json.loads((commit_data_dir / "questions.json").read_text())


@pytest.fixture(scope="session")
def commit_profile(commit_records: list[dict[str, Any]]) -> pa.Table:
    """PROFILE rows (one per user and item id, oldest first) of every author."""
    rows, seen = [], set()
    for rec in commit_records:
        for item in rec["profile"]:
            key = (rec["user_id"], item["id"])
            if key in seen:
                continue
            seen.add(key)
            rows.append({"user_id": rec["user_id"], "item_id": item["id"], "input": item["text"],
                         "output": item["title"], "date": item["date"], "position": len(seen)})
    return pa.Table.from_pylist(rows)


@pytest.fixture(scope="session")
def tokenizer():
    from ttp_ray.policy.rag import load_tokenizer

    return load_tokenizer("smollm2-135m-instruct")
