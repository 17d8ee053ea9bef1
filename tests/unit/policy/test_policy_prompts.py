"""Prompt templates on real commit records and the token budget (the query is never cut)."""

from __future__ import annotations

import pytest

from ttp_ray.policy.config import PolicyConfig, RetrievalConfig
from ttp_ray.policy.prompts import (
    Example,
    PromptTooLongError,
    TokenCounter,
    fit_prompt,
    prompt_task,
    render_fewshot,
    render_lamp,
)
from ttp_ray.policy.rag import RagPolicy, resolve_template

COMMIT = prompt_task("commit_subject")


def query_text(rec: dict) -> str:
    """The change description after the task's instruction line."""
    return rec["input"].split("change:", 1)[1].strip()


def test_task_names_are_normalised() -> None:
    assert prompt_task("LaMP-4") is prompt_task("lamp_4") is prompt_task("LaMP_4")
    assert prompt_task("LaMP_5").output_label == "Title"
    assert prompt_task("something new").name == "generic"


def test_fewshot_renders_worked_examples_then_the_open_query() -> None:
    exs = [Example("1", "Files: a.py (+1 -1)\nDescription: x", "[ruff] fix a"), Example("2", "", "just a tweet")]
    text = render_fewshot(COMMIT, exs, "Files: b.py (+2 -0)\nDescription: y")
    assert text == ("Change: Files: a.py (+1 -1)\nDescription: x\nSubject: [ruff] fix a\n\n"
                    "Subject: just a tweet\n\n"
                    "Change: Files: b.py (+2 -0)\nDescription: y\nSubject:")


def test_lamp_renders_the_official_layout() -> None:
    lamp4 = prompt_task("LaMP_4")
    exs = [Example("1", "article one", "Title One"), Example("2", "article two", "Title Two")]
    text = render_lamp(lamp4, exs, "Generate a headline for the following article: new article")
    assert text == ('"Title One" is the title for "article one" , and "Title Two" is the title for "article two" '
                    '. Generate a headline for the following article: new article')
    assert render_lamp(lamp4, [], "bare input") == "bare input"


def test_auto_template_is_fewshot_for_the_bundled_model(tokenizer) -> None:
    assert resolve_template("auto", tokenizer) == "fewshot"
    assert resolve_template("lamp", tokenizer) == "lamp"


@pytest.mark.parametrize("template", ["fewshot", "lamp"])
@pytest.mark.parametrize("budget", [96, 160, 256, 512, 2048])
def test_prompts_respect_the_budget_and_keep_the_query(commit_records, commit_profile, tokenizer, template, budget):
    cfg = PolicyConfig(template=template, max_prompt_tokens=budget, retrieval=RetrievalConfig(k=4))
    policy = RagPolicy(commit_profile, cfg, tokenizer)
    counter = TokenCounter(tokenizer)
    for rec in commit_records[::5]:
        qt = query_text(rec)
        try:
            fp = policy.build(rec["user_id"], "commit_subject", qt, query_input=rec["input"])
        except PromptTooLongError as e:
            assert e.parameter == "max_prompt_tokens"
            assert counter.count(f"Change: {qt}\nSubject:") > budget or template == "lamp"
            continue
        assert fp.n_tokens == counter.count(fp.text) <= budget
        if template == "fewshot":
            assert fp.text.endswith(f"Change: {qt}\nSubject:")  # the query block is intact and last
        else:
            assert rec["input"] in fp.text and fp.text.startswith("<|im_start|>")
        if budget >= 2048:
            assert len(fp.item_ids) == 4  # room for everything: nothing dropped


def test_tight_budget_truncates_the_context_not_the_query(commit_records, commit_profile, tokenizer) -> None:
    rec = max(commit_records, key=lambda r: len(r["profile"]))
    qt = query_text(rec)
    counter = TokenCounter(tokenizer)
    bare = counter.count(f"Change: {qt}\nSubject:")
    policy = RagPolicy(commit_profile, PolicyConfig(max_prompt_tokens=bare + 60), tokenizer)
    fp = policy.build(rec["user_id"], "commit_subject", qt)
    assert fp.truncated and fp.n_tokens <= bare + 60
    assert fp.text.endswith(f"Change: {qt}\nSubject:")
    assert fp.item_ids  # some (cut) context still fits


def test_a_query_longer_than_the_budget_is_an_error(commit_profile, tokenizer) -> None:
    policy = RagPolicy(commit_profile, PolicyConfig(max_prompt_tokens=16), tokenizer)
    with pytest.raises(PromptTooLongError, match="never truncated"):
        policy.prompt_for(policy.users[0], "commit_subject", "word " * 100)


def test_fit_prompt_shares_the_budget_like_lamp(tokenizer) -> None:
    counter = TokenCounter(tokenizer)
    long = " ".join(f"word{i}" for i in range(400))
    exs = [Example(str(i), long, f"subject {i}") for i in range(3)]
    def render(e):
        return render_fewshot(COMMIT, e, "the query")
    fp = fit_prompt(render, exs, counter, 300)
    assert fp.n_tokens <= 300 and fp.truncated and len(fp.item_ids) == 3
    # every example got a similar share (equal split), and each still ends with its full output
    for i in range(3):
        assert f"Subject: subject {i}" in fp.text
