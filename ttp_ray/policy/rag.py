"""The personalized RAG policy's prompt side: retrieve from the user's profile, fit a template in budget.

`RagPolicy.prompt_for(user_id, task, query_text)` is the one call the generation pipeline and the Serve
`/v1/generate` route share. It is cheap: the profile is grouped by user once (a sort), and each user's
retrieval index is built on that user's first query and kept in an LRU cache.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from ttp_ray.models import POLICY_DEFAULT
from ttp_ray.policy.config import PolicyConfig
from ttp_ray.policy.prompts import (
    Example,
    FittedPrompt,
    TokenCounter,
    fit_prompt,
    prompt_task,
    render_fewshot,
    render_lamp,
)
from ttp_ray.policy.retrieval import BM25Index, DenseEncoder, DenseIndex, Index

__all__ = ["RagPolicy", "load_tokenizer", "resolve_template"]


def load_tokenizer(model: str) -> Any:
    """The policy model's HF tokenizer (bundled names resolved to their local folder)."""
    from transformers import AutoTokenizer

    from ttp_ray.models import resolve_model

    return AutoTokenizer.from_pretrained(resolve_model(model))


def resolve_template(template: str, tokenizer: Any) -> Literal["fewshot", "lamp"]:
    """`auto` -> `fewshot` for the bundled SmolLM2 (measured better) or a tokenizer without chat template."""
    if template in ("fewshot", "lamp"):
        return template  # type: ignore[return-value]
    bundled = Path(str(getattr(tokenizer, "name_or_path", ""))).name == POLICY_DEFAULT
    return "fewshot" if bundled or not getattr(tokenizer, "chat_template", None) else "lamp"


@dataclass
class _UserIndex:
    items: list[Example]  # oldest first, as stored
    position: dict[str, int]  # item_id -> index in items
    index: Index


class RagPolicy:
    """Builds personalized prompts from a PROFILE table.

    Args:
        profile: PROFILE rows (at least `user_id`, `item_id`, `input`, `output`, `position`) of the users to serve.
        cfg: retrieval, template and budget.
        tokenizer: the policy model's tokenizer (budgets are counted in its tokens).
        encoder: a shared `DenseEncoder` for `retrieval.method == "dense"` (built lazily if omitted).
    """

    def __init__(self, profile: pa.Table, cfg: PolicyConfig, tokenizer: Any, *, encoder: DenseEncoder | None = None):
        self.cfg = cfg
        self.counter = TokenCounter(tokenizer)
        self.template = resolve_template(cfg.template, tokenizer)
        self._encoder = encoder
        self._profile, self._slices = _group_by_user(profile)
        self._cache: OrderedDict[str, _UserIndex] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def users(self) -> list[str]:
        return list(self._slices)

    def has_user(self, user_id: str) -> bool:
        return user_id in self._slices

    def retrieve(self, user_id: str, query_text: str, *, exclude_item_id: str | None = None) -> list[Example]:
        """The user's top-k profile items for `query_text`, most relevant first; an unknown user has none."""
        if self.cfg.retrieval.k == 0 or user_id not in self._slices:
            return []
        ui = self._user_index(user_id)
        exclude = ui.position.get(exclude_item_id) if exclude_item_id is not None else None
        return [ui.items[i] for i in ui.index.top_k(query_text, self.cfg.retrieval.k, exclude=exclude)]

    def build(
        self,
        user_id: str,
        task: str,
        query_text: str,
        *,
        query_input: str | None = None,
        exclude_item_id: str | None = None,
    ) -> FittedPrompt:
        """The fitted prompt for one query.

        Args:
            user_id: whose profile to retrieve from (unknown users get a prompt without context).
            task: task name (`LaMP_4`, `commit_subject`, …) selecting the phrasing.
            query_text: the query's text (what is retrieved with and shown in the few-shot prompt).
            query_input: the full task input as released (the `lamp` template shows it); default: the task's
                instruction around `query_text`.
            exclude_item_id: leave-one-out: this profile item never appears in the context.

        Raises:
            PromptTooLongError: the query alone exceeds `cfg.max_prompt_tokens`.
        """
        spec = prompt_task(task)
        examples = self.retrieve(user_id, query_text, exclude_item_id=exclude_item_id)
        if self.template == "fewshot":
            def render(exs: Sequence[Example]) -> str:
                return render_fewshot(spec, self._ordered(exs), query_text)
        else:
            full_input = query_input if query_input is not None else spec.instruction.format(text=query_text)

            def render(exs: Sequence[Example]) -> str:
                text = render_lamp(spec, self._ordered(exs), full_input)
                return self.counter.chat(text) if self.counter.has_chat_template else text
        return fit_prompt(render, examples, self.counter, self.cfg.max_prompt_tokens)

    def prompt_for(
        self,
        user_id: str,
        task: str,
        query_text: str,
        *,
        exclude_item_id: str | None = None,
        query_input: str | None = None,
    ) -> str:
        """The prompt text for one query (see `build`)."""
        return self.build(user_id, task, query_text, query_input=query_input, exclude_item_id=exclude_item_id).text

    def _ordered(self, examples: Sequence[Example]) -> list[Example]:
        return list(reversed(examples)) if self.cfg.example_order == "most_relevant_last" else list(examples)

    def _user_index(self, user_id: str) -> _UserIndex:
        with self._lock:
            hit = self._cache.get(user_id)
            if hit is not None:
                self._cache.move_to_end(user_id)
                return hit
        built = self._build_index(user_id)  # outside the lock: may take milliseconds (dense: an encoder call)
        with self._lock:
            self._cache[user_id] = built
            while len(self._cache) > self.cfg.retrieval.cache_users:
                self._cache.popitem(last=False)
        return built

    def _build_index(self, user_id: str) -> _UserIndex:
        start, length = self._slices[user_id]
        rows = self._profile.slice(start, length)
        by_id: dict[str, Example] = {}
        for i, x, y in zip(rows["item_id"].to_pylist(), rows["input"].to_pylist(), rows["output"].to_pylist(),
                           strict=True):
            by_id.setdefault(i, Example(i, x, y))  # a repeated item id (merged profiles) counts once
        items = list(by_id.values())
        docs = [f"{ex.output} {ex.input}".strip() for ex in items]  # LaMP's corpus text: title + text
        r = self.cfg.retrieval
        index: Index
        if r.method == "bm25":
            index = BM25Index(docs, tokenizer=r.bm25_tokenizer)
        else:
            if self._encoder is None:
                self._encoder = DenseEncoder(r.encoder)
            index = DenseIndex(docs, self._encoder)
        return _UserIndex(items, {ex.item_id: i for i, ex in enumerate(items)}, index)


def _group_by_user(profile: pa.Table) -> tuple[pa.Table, dict[str, tuple[int, int]]]:
    """Sort by (user, position) and map each user to its (offset, length) slice."""
    missing = {"user_id", "item_id", "input", "output", "position"} - set(profile.column_names)
    if missing:
        raise ValueError(f"profile table is missing columns {sorted(missing)}; has {profile.column_names}")
    table = profile.select(["user_id", "item_id", "input", "output", "position"]).sort_by(
        [("user_id", "ascending"), ("position", "ascending")]).combine_chunks()
    users = table["user_id"].to_numpy(zero_copy_only=False)
    if not len(users):
        return table, {}
    uniq, starts, counts = np.unique(users, return_index=True, return_counts=True)
    return table, {str(u): (int(s), int(c)) for u, s, c in zip(uniq, starts, counts, strict=True)}
