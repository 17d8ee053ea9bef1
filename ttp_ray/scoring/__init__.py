"""Golden scoring: LaMP-exact per-example ROUGE-1 / ROUGE-L (pure numpy; no Ray)."""

from ttp_ray.scoring.rouge import corpus_rouge, rouge_f1, score_candidates, tokenize

__all__ = ["corpus_rouge", "rouge_f1", "run_score", "score_candidates", "tokenize"]


def __getattr__(name: str):  # noqa: ANN202 - lazy: run_score pulls in the data loaders
    if name == "run_score":
        from ttp_ray.scoring.lamp_eval import run_score

        return run_score
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
