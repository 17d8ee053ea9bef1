"""Configs of the data stage: which dataset to load (`DatasetConfig`) and the synthetic benchmark's knobs."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from ttp_ray.config import StageConfig
from ttp_ray.data._fields import bad_unicode_at

MAX_ERROR_RATE = 0.1  # default `max_error_rate` of every loader (see docs/data.md, "Bad input")


class SyntheticConfig(StageConfig):
    """The synthetic multi-user headline benchmark (see docs/data.md for what each knob does to α/β).

    Users differ by a marker prefix, favourite words and a preferred headline length; references act on the
    failure modes the paper diagnoses, whatever the policy: `collapse_frac` makes some users' references
    nearly unreachable (golden scores cluster near zero), `hack_frac` makes some queries reward terse answers.
    """

    # Size
    seed: int = Field(0, description="RNG seed; the same seed writes byte-identical files.")
    n_users: int = Field(24, ge=1, description="Number of users.")
    profile_size: int = Field(40, ge=1, description="Past (article, headline) pairs per user.")
    queries_per_user: int = Field(4, ge=1, description="Test queries per user (the user's latest articles).")
    # Vocabulary
    n_topics: int = Field(8, ge=1, description="Topics; each user writes about 2-3 of them.")
    topic_vocab_size: int = Field(40, ge=12, description="Content words per topic (articles and headlines).")
    style_vocab_size: int = Field(48, ge=4, description="Pool of favourite (style) words shared out to users.")
    favourite_words: int = Field(3, ge=1, description="Favourite words per user; 1-2 appear in each headline.")
    # Lengths
    article_words: tuple[int, int] = Field(
        (40, 60), description="Min/max words of a normal article (hack-prone 'briefs' are ~30 words)."
    )
    headline_words: tuple[int, int] = Field(
        (4, 9), description="Range of users' preferred number of content words per headline (max 10: an "
        "article has 10 salient words)."
    )
    # Failure-mode knobs
    collapse_frac: float = Field(
        0.25, ge=0.0, le=1.0,
        description="Fraction of users whose references are mostly fresh private tokens plus one or two article "
        "words: golden scores cluster near 0 with a small learnable spread (→ higher α under a Det RM).",
    )
    hack_frac: float = Field(
        0.25, ge=0.0, le=1.0,
        description="Fraction of the non-collapsed users' queries and profile items that are terse briefs with a "
        "1-2 word reference: longer / keyword-stuffed candidates lose F1 there (→ higher β).",
    )

    @field_validator("article_words", "headline_words")
    @classmethod
    def _ordered(cls, v: tuple[int, int], info: ValidationInfo) -> tuple[int, int]:
        lo, hi = v
        if not 1 <= lo <= hi:
            raise ValueError(f"`{info.field_name}` must be (min, max) with 1 <= min <= max, got {v}")
        return v

    @model_validator(mode="after")
    def _article_room(self) -> SyntheticConfig:
        if self.article_words[0] < 30:
            raise ValueError(f"`article_words` min must be >= 30 (briefs are ~30 words), got {self.article_words}")
        if self.headline_words[1] > 10:
            raise ValueError(f"`headline_words` max must be <= 10 (an article has 10 salient words), got "
                             f"{self.headline_words}")
        if self.favourite_words > self.style_vocab_size:
            raise ValueError(f"`favourite_words` ({self.favourite_words}) must be <= `style_vocab_size` "
                             f"({self.style_vocab_size})")
        return self


class DatasetConfig(StageConfig):
    """Which dataset the data stage loads, and how much of it to keep."""

    name: str = Field("synthetic", min_length=1, description="Dataset name (run-dir folder and `dataset` column).")
    kind: Literal["synthetic", "lamp", "longlamp"] = Field("synthetic", description="Input format.")
    # LaMP
    questions: Path | None = Field(None, description="LaMP questions JSON (kind=lamp).")
    outputs: Path | None = Field(None, description="LaMP outputs JSON with the golds (kind=lamp, optional).")
    # LongLaMP
    path: Path | None = Field(None, description="LongLaMP rows as JSON list, JSONL or Parquet (kind=longlamp).")
    longlamp_task: Literal["abstract", "topic", "review"] | None = Field(
        None, description="LongLaMP task (kind=longlamp): how to read profile items."
    )
    task: str | None = Field(None, description="Task override (else the outputs file's `task`, else inferred).")
    synthetic: SyntheticConfig = Field(default_factory=SyntheticConfig, description="Synthetic benchmark knobs.")
    # Limits
    max_users: int | None = Field(None, ge=1, description="Keep this many users, those with the longest histories.")
    max_queries_per_user: int | None = Field(None, ge=1, description="Keep each user's first k test queries.")
    max_profile_items: int | None = Field(None, ge=1, description="Keep each user's latest k profile items.")
    # Bad input
    strict: bool = Field(False, description="Raise on the first malformed record instead of skipping and logging it.")
    max_error_rate: float = Field(
        MAX_ERROR_RATE, ge=0, le=1,
        description="Fail the load when the share of rejected records (questions/rows), or of rejected profile "
        "items, is above this (0: any bad record fails the load; 1: only a load with no valid query fails).")

    @field_validator("name", "questions", "outputs", "path", "task", mode="before")
    @classmethod
    def _valid_text(cls, v: object, info: ValidationInfo) -> object:
        # a YAML "\ud800" escape would otherwise fail later, deep in a path or an Arrow column
        pos = bad_unicode_at(v) if isinstance(v, str) else None
        if pos is not None:
            raise ValueError(f"`{info.field_name}` is not valid UTF-8 text: character {pos} is a lone surrogate")
        return v

    @model_validator(mode="after")
    def _required_by_kind(self) -> DatasetConfig:
        if self.kind == "lamp" and self.questions is None:
            raise ValueError("`questions` is required when kind='lamp'")
        if self.kind == "longlamp" and (self.path is None or self.longlamp_task is None):
            raise ValueError("`path` and `longlamp_task` are required when kind='longlamp'")
        return self

    def missing_files(self) -> list[str]:
        """Input fields whose file does not exist (checked when the data stage runs, not at parse time, so a
        cluster config can be validated on a laptop)."""
        return [f"`{n}` file not found: {getattr(self, n)}" for n in ("questions", "outputs", "path")
                if getattr(self, n) is not None and not Path(getattr(self, n)).is_file()]
