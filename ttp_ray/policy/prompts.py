"""Prompt templates and the token-budget fitting that keeps every prompt within the model's context.

Two templates:

* `fewshot` — a plain completion prompt; the retrieved profile items become worked examples
  (`Change: …\\nSubject: …` blocks), then the query with an open output label. Tiny models imitate the
  user's style far better this way (measured-here.md: ROUGE-1 0.053 vs 0.029 with the chat instruction).
* `lamp` — LaMP's per-task prompt (`LaMP/prompts/prompts.py`): item strings joined with ", and ", then the
  task's suffix with the full task input, wrapped in the model's chat template when it has one.

Budget fitting follows LaMP: the fixed part (query, labels, chat wrapper) is measured first and never
truncated; the remaining tokens are shared among the items in relevance order, only each item's long field
(its input, e.g. the article or change description) is cut, and unused tokens carry over to the next item.
Token counts are re-checked on the final string (concatenation is not additive), shrinking until it fits.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from ttp_ray.errors import TTPValidationError

__all__ = [
    "TASK_PROMPTS",
    "Example",
    "FittedPrompt",
    "PromptTask",
    "PromptTooLongError",
    "TokenCounter",
    "fit_prompt",
    "prompt_task",
    "render_fewshot",
    "render_lamp",
]


class PromptTooLongError(TTPValidationError):
    """The query alone (with the template's fixed text) exceeds the prompt budget."""


@dataclass(frozen=True)
class PromptTask:
    """How one task is phrased in each template."""

    name: str
    input_label: str  # few-shot label of the item's input ("Change")
    output_label: str  # few-shot label of the user's output ("Subject")
    instruction: str  # the released task input, `{text}` = query text (used when the full input is unknown)
    lamp_item: str  # LaMP per-item string with {input} / {output}
    lamp_suffix: str  # LaMP suffix after the joined items, {input} = the full task input


TASK_PROMPTS: dict[str, PromptTask] = {
    t.name: t
    for t in (
        PromptTask("LaMP_4", "Article", "Headline", "Generate a headline for the following article: {text}",
                   '"{output}" is the title for "{input}" ', ". {input}"),
        PromptTask("LaMP_5", "Abstract", "Title", "Generate a title for the following abstract of a paper: {text}",
                   '"{output}" is a title for "{input}" ', ". Following the given patterns {input}"),
        PromptTask("LaMP_6", "Email", "Subject", "Generate a subject for the following email: {text}",
                   '"{output}" is the title for "{input}" ', ". {input}"),
        PromptTask("LaMP_7", "Paraphrase", "Tweet",
                   "Paraphrase the following tweet without any explanation before or after it: {text}",
                   '"{output}" ', " are written by a person. Following the given patterns {input}"),
        PromptTask("commit_subject", "Change", "Subject",
                   "Generate a commit subject line for the following change:\n{text}",
                   '"{output}" is the subject for "{input}" ', ". {input}"),
        PromptTask("synthetic_headline", "Article", "Headline",
                   "Generate a personalized headline for the following article: {text}",
                   '"{output}" is the title for "{input}" ', ". {input}"),
    )
}
GENERIC = PromptTask("generic", "Input", "Output", "{text}", '"{output}" is the output for "{input}" ', ". {input}")


def prompt_task(name: str) -> PromptTask:
    """The phrasing of task `name` (`LaMP-4`, `lamp_4`, `LaMP_4` are one task); unknown tasks get a generic one."""
    m = re.fullmatch(r"lamp[-_ ]?(\d)", name.strip(), flags=re.IGNORECASE)
    key = f"LaMP_{m.group(1)}" if m else name.strip()
    return TASK_PROMPTS.get(key, GENERIC)


@dataclass(frozen=True)
class Example:
    """A retrieved profile item: the user's past input and their real output for it."""

    item_id: str
    input: str
    output: str

    @property
    def long_field(self) -> str:
        """The field truncated to fit (LaMP cuts the article/abstract/tweet, never the short output)."""
        return "input" if self.input else "output"


def render_fewshot(task: PromptTask, examples: Sequence[Example], query_text: str) -> str:
    """Worked examples (`{input_label}: …\\n{output_label}: …`) then the query with an open output label."""
    blocks = []
    for ex in examples:
        head = f"{task.input_label}: {ex.input}\n" if ex.input else ""
        blocks.append(f"{head}{task.output_label}: {ex.output}")
    blocks.append(f"{task.input_label}: {query_text}\n{task.output_label}:")
    return "\n\n".join(blocks)


def render_lamp(task: PromptTask, examples: Sequence[Example], query_input: str) -> str:
    """LaMP's prompt: item strings joined with ", and ", then the suffix; no examples -> the bare input."""
    if not examples:
        return query_input
    items = ", and ".join(task.lamp_item.format(input=ex.input, output=ex.output) for ex in examples)
    return items + task.lamp_suffix.format(input=query_input)


class TokenCounter:
    """Counts and truncates with the policy's tokenizer exactly as the engines tokenize prompts."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer

    def count(self, text: str) -> int:
        """Tokens of a whole prompt (special tokens included, as the engines add them)."""
        return len(self.tokenizer(text)["input_ids"])

    def count_piece(self, text: str) -> int:
        """Tokens of a fragment inside a prompt (no special tokens)."""
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def truncate(self, text: str, max_tokens: int) -> str:
        """The longest token prefix of `text` with at most `max_tokens` tokens."""
        if max_tokens <= 0:
            return ""
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return text if len(ids) <= max_tokens else self.tokenizer.decode(ids[:max_tokens])

    def chat(self, text: str) -> str:
        """`text` as one user turn in the chat template (the generation prompt appended)."""
        return self.tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=False)

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))


@dataclass(frozen=True)
class FittedPrompt:
    """A prompt within budget: its text, exact token count and which items it shows (possibly truncated)."""

    text: str
    n_tokens: int
    item_ids: tuple[str, ...]
    truncated: bool


_MAX_REFITS = 8


def fit_prompt(
    render: Callable[[Sequence[Example]], str],
    examples: Sequence[Example],
    counter: TokenCounter,
    budget: int,
) -> FittedPrompt:
    """Fit `examples` (most relevant first) into `render`'s prompt within `budget` tokens.

    Raises:
        PromptTooLongError: the prompt without any example already exceeds `budget`.
    """
    bare = render([])
    n_bare = counter.count(bare)
    if n_bare > budget:
        raise PromptTooLongError(
            f"the query needs {n_bare} prompt tokens with the template, over the budget of {budget}; "
            "the query is never truncated: raise `policy.max_prompt_tokens` (and `engine.max_model_len`)",
            parameter="max_prompt_tokens", value=budget)
    if not examples:
        return FittedPrompt(bare, n_bare, (), False)
    overheads = [counter.count(render([_emptied(ex)])) - n_bare for ex in examples]
    room = budget - n_bare
    for _ in range(_MAX_REFITS):
        kept, cut = _share_budget(examples, overheads, room, counter)
        text = render(kept)
        n = counter.count(text)
        if n <= budget:
            return FittedPrompt(text, n, tuple(k.item_id for k in kept), cut or len(kept) < len(examples))
        room -= n - budget
    return FittedPrompt(bare, n_bare, (), True)  # unreachable in practice; the bare prompt always fits


def _emptied(ex: Example) -> Example:
    return replace(ex, **{ex.long_field: ""})


def _share_budget(
    examples: Sequence[Example], overheads: Sequence[int], room: int, counter: TokenCounter
) -> tuple[list[Example], bool]:
    """LaMP's split: each remaining item gets an equal share of what is left; unused tokens carry over.

    Returns the kept (possibly cut) examples and whether any long field was cut.
    """
    kept: list[Example] = []
    any_cut = False
    left = room
    for i, (ex, overhead) in enumerate(zip(examples, overheads, strict=True)):
        share = left // (len(examples) - i)
        allowed = share - overhead
        if allowed <= 0:
            continue  # not even the item's short field fits its share: skip it, its share carries over
        long_text = getattr(ex, ex.long_field)
        cut = counter.truncate(long_text, allowed)
        any_cut |= cut != long_text
        kept.append(ex if cut == long_text else replace(ex, **{ex.long_field: cut}))
        left -= overhead + counter.count_piece(cut)
    return kept, any_cut
