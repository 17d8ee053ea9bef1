"""Fixtures for the generation unit tests: a real commit-subject dataset written as the data stage does."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def commit_run_dir(tmp_path_factory, commit_data_dir: Path) -> Path:
    """A run dir with `data/commits/{users,profile,queries}.parquet` of 3 authors (9 queries)."""
    from ttp_ray.data.lamp import load_lamp

    run_dir = tmp_path_factory.mktemp("gen-run")
    ds = load_lamp(commit_data_dir / "questions.json", commit_data_dir / "outputs.json", name="commits",
                   max_users=3, max_profile_items=30)
    ds.write(run_dir / "data" / "commits")
    return run_dir
