"""A deterministic synthetic multi-user headline benchmark, written as LaMP time-split files.

Each user writes headlines for short pseudo-word "articles" (30-60 words) in a signature style: a marker prefix
("breaking:", "[fix]" ...), one or two favourite words, and a preferred number of content words taken from the
article's most salient (most repeated) words. Profiles are (article, headline) pairs like LaMP-4; queries are
the user's latest articles. Two knobs act through the references, so they work with any policy:

* `collapse_frac` users write headlines made mostly of fresh private tokens (never seen in any article or
  profile) plus exactly one or two of the article's most salient words: every candidate scores near zero,
  with a small spread that is learnable (the candidates that contain those words score higher).
* `hack_frac` of the other users' items are "briefs" (shorter articles, ~30 words) whose reference is just
  the 1-2 most salient words: there longer, keyword-stuffed candidates lose ROUGE F1 (precision), while on
  normal items longer keyword-rich candidates win (recall).

The same seed writes byte-identical `questions.json`, `outputs.json` and `meta.json` (the ground truth of who
is collapsed and which items are briefs, for diagnostics and tests).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ttp_ray.data.config import SyntheticConfig
from ttp_ray.data.io import write_json

__all__ = ["INPUT_TEMPLATE", "TASK", "generate", "run_synth", "write_synthetic"]

TASK = "synthetic_headline"
INPUT_TEMPLATE = "Generate a personalized headline for the following article: {article}"
_FILLER = ("the", "a", "of", "in", "and", "to", "with", "for", "on", "as", "by", "from", "after", "over", "at", "its",
           "their", "new", "says", "is", "was", "were", "will", "has", "have", "amid", "into", "more", "than", "this",
           "that")
_MARKERS = ("breaking:", "[fix]", "update:", "[news]", "exclusive:", "watch:", "analysis:", "[live]", "report:",
            "opinion:", "[alert]", "explainer:")
_CONSONANTS = "bdfgklmnprstvz"
_VOWELS = "aeiou"
_N_SALIENT = 10  # salient (repeated) words per article; headlines draw from their head
_BRIEF_WORDS = (28, 34)  # article length of hack-prone briefs
_PRIVATE_TOKENS = (7, 10)  # fresh private tokens per collapsed-user headline


class _Words:
    """Unique pronounceable pseudo-words (and digit-suffixed private tokens) from one RNG."""

    _SYLLABLES = [c + v for c in _CONSONANTS for v in _VOWELS]

    def __init__(self, rng: np.random.Generator, reserved: set[str]) -> None:
        self.rng = rng
        self.used = set(reserved)

    def _fresh(self, make: Callable[[], str]) -> str:
        while True:
            w = make()
            if w not in self.used:
                self.used.add(w)
                return w

    def word(self) -> str:
        def make() -> str:
            idx = self.rng.integers(0, len(self._SYLLABLES), size=int(self.rng.integers(2, 4)))
            return "".join(self._SYLLABLES[i] for i in idx)

        return self._fresh(make)

    def private(self) -> str:
        # Rare-looking tokens ("qovu37") that only this headline uses: unreachable for any policy.
        return self._fresh(lambda: "q" + self.word() + str(int(self.rng.integers(10, 100))))


@dataclass
class _User:
    user_id: str
    topics: list[int]
    marker: str
    favourites: list[str]
    length_pref: int
    collapse: bool


def _make_users(cfg: SyntheticConfig, rng: np.random.Generator, words: _Words) -> list[_User]:
    n_collapse = round(cfg.collapse_frac * cfg.n_users)
    collapse = set(rng.permutation(cfg.n_users)[:n_collapse].tolist())
    style = [words.word() for _ in range(cfg.style_vocab_size)]
    markers = list(_MARKERS) + [f"[{words.word()}]" for _ in range(max(0, cfg.n_users - len(_MARKERS)))]
    order = rng.permutation(cfg.n_users)  # who gets which marker
    users = []
    for u in range(cfg.n_users):
        n_topics = min(cfg.n_topics, int(rng.integers(2, 4)))
        users.append(_User(
            user_id=f"user{u:03d}",
            topics=sorted(rng.choice(cfg.n_topics, size=n_topics, replace=False).tolist()),
            marker=markers[int(order[u])],
            favourites=[str(w) for w in rng.choice(style, size=cfg.favourite_words, replace=False)],
            length_pref=int(rng.integers(cfg.headline_words[0], cfg.headline_words[1] + 1)),
            collapse=u in collapse,
        ))
    return users


def _article(rng: np.random.Generator, vocab: list[str], n_words: int) -> tuple[str, list[str]]:
    """A short article and its salient words, most repeated first (salient word k has weight 1/(k+1))."""
    salient = [str(w) for w in rng.choice(vocab, size=_N_SALIENT, replace=False)]
    weights = 1.0 / np.arange(1, _N_SALIENT + 1)
    weights /= weights.sum()
    # Each position is a filler word (45%), a salient word (40%, Zipf-weighted) or another topic word (15%).
    kind = rng.random(n_words)
    filler = rng.integers(0, len(_FILLER), size=n_words)
    sal = rng.choice(_N_SALIENT, size=n_words, p=weights)
    other = rng.integers(0, len(vocab), size=n_words)
    tokens = [
        _FILLER[f] if k < 0.45 else salient[s] if k < 0.85 else vocab[o]
        for k, f, s, o in zip(kind.tolist(), filler.tolist(), sal.tolist(), other.tolist(), strict=True)
    ]
    for k, w in enumerate(salient[:6]):  # the head of the salient list is always present (and repeated)
        tokens[int(rng.integers(0, n_words))] = w
        if k < 3:
            tokens[int(rng.integers(0, n_words))] = w
    sentences, i = [], 0
    while i < len(tokens):
        n = int(rng.integers(8, 13))
        chunk = tokens[i : i + n]
        sentences.append(" ".join([chunk[0].capitalize(), *chunk[1:]]) + ".")
        i += n
    # Recount salience on the final text so "most salient" really means "most frequent".
    counts = {w: tokens.count(w) for w in salient}
    ranked = sorted(salient, key=lambda w: (-counts[w], salient.index(w)))
    return " ".join(sentences), [w for w in ranked if counts[w] > 0]


def _headline(rng: np.random.Generator, words: _Words, user: _User, salient: list[str], brief: bool) -> str:
    """The user's reference headline for an article with these salient words."""
    if user.collapse:
        n_reach = 1 + int(rng.random() < 0.5)
        tokens = [words.private() for _ in range(int(rng.integers(_PRIVATE_TOKENS[0], _PRIVATE_TOKENS[1] + 1)))]
        for w in salient[:n_reach]:
            tokens.insert(int(rng.integers(0, len(tokens) + 1)), w)
        return " ".join(tokens)
    if brief:  # terse: just the one or two most salient words
        return " ".join(salient[: 1 + int(rng.random() < 0.5)])
    n_content = int(np.clip(user.length_pref + rng.integers(-1, 2), 1, len(salient)))
    tokens = list(salient[:n_content])
    for w in rng.choice(user.favourites, size=1 + int(rng.random() < 0.5), replace=False):
        tokens.insert(int(rng.integers(0, len(tokens) + 1)), str(w))
    return " ".join([user.marker, *tokens])


def generate(cfg: SyntheticConfig) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any]]:
    """Build the benchmark in memory: `(questions, outputs, meta)` in LaMP time-split format."""
    rng = np.random.default_rng(cfg.seed)
    reserved = set(_FILLER) | {m.strip("[]:") for m in _MARKERS}
    words = _Words(rng, reserved)
    topic_vocab = [[words.word() for _ in range(cfg.topic_vocab_size)] for _ in range(cfg.n_topics)]
    users = _make_users(cfg, rng, words)
    normal = [u for u in users if not u.collapse]
    n_items = cfg.profile_size + cfg.queries_per_user
    # Briefs: an exact share of the normal users' profile items and (separately) of their queries.
    brief: set[tuple[str, int]] = set()
    for lo, hi in ((0, cfg.profile_size), (cfg.profile_size, n_items)):
        slots = [(u.user_id, j) for u in normal for j in range(lo, hi)]
        picks = rng.permutation(len(slots))[: round(cfg.hack_frac * len(slots))]
        brief |= {slots[int(k)] for k in picks}
    start = dt.date(2020, 1, 1)
    questions, golds, hack_queries, hack_items = [], [], [], []
    for ui, user in enumerate(users):
        items = []
        for j in range(n_items):
            is_brief = (user.user_id, j) in brief
            n_words = int(rng.integers(*(_BRIEF_WORDS if is_brief else cfg.article_words), endpoint=True))
            text, salient = _article(rng, topic_vocab[int(rng.choice(user.topics))], n_words)
            date = (start + dt.timedelta(days=ui + 7 * j)).isoformat()
            items.append({"id": f"{user.user_id}-{j:03d}", "text": text,
                          "title": _headline(rng, words, user, salient, is_brief), "date": date})
            if is_brief:
                (hack_items if j < cfg.profile_size else hack_queries).append(items[-1]["id"])
        profile = items[: cfg.profile_size]
        for item in items[cfg.profile_size :]:
            questions.append({"id": item["id"], "user_id": user.user_id,
                              "input": INPUT_TEMPLATE.format(article=item["text"]), "profile": profile})
            golds.append({"id": item["id"], "output": item["title"]})
    meta = {
        "task": TASK,
        "config": cfg.model_dump(mode="json"),
        "users": [{"user_id": u.user_id, "marker": u.marker, "favourites": u.favourites,
                   "length_pref": u.length_pref, "topics": u.topics, "collapse": u.collapse} for u in users],
        "collapse_users": [u.user_id for u in users if u.collapse],
        "hack_queries": hack_queries,
        "hack_items": hack_items,
    }
    return questions, {"task": TASK, "golds": golds}, meta


def write_synthetic(cfg: SyntheticConfig, out_dir: str | Path) -> dict[str, Path]:
    """Write `questions.json`, `outputs.json` and `meta.json` under `out_dir`; returns their paths."""
    out = Path(out_dir)
    questions, outputs, meta = generate(cfg)
    return {
        "questions": write_json(questions, out / "questions.json"),
        "outputs": write_json(outputs, out / "outputs.json"),
        "meta": write_json(meta, out / "meta.json"),
    }


def run_synth(cfg: SyntheticConfig, out_dir: str | Path) -> dict[str, Any]:
    """CLI entry (`ttp synth`): write the benchmark files and print a one-screen summary."""
    paths = write_synthetic(cfg, out_dir)
    meta = json.loads(paths["meta"].read_text(encoding="utf-8"))
    summary = {
        "out_dir": str(Path(out_dir)),
        "task": TASK,
        "n_users": cfg.n_users,
        "n_profile_items": cfg.n_users * cfg.profile_size,
        "n_queries": cfg.n_users * cfg.queries_per_user,
        "n_collapse_users": len(meta["collapse_users"]),
        "n_hack_queries": len(meta["hack_queries"]),
        "n_hack_profile_items": len(meta["hack_items"]),
        "files": {k: str(v) for k, v in paths.items()},
    }
    print(f"synthetic benchmark ({TASK}, seed={cfg.seed}) -> {summary['out_dir']}")
    print(f"  users: {summary['n_users']} ({summary['n_collapse_users']} collapsed)  profile items: "
          f"{summary['n_profile_items']}  queries: {summary['n_queries']} ({summary['n_hack_queries']} hack-prone)")
    return summary
