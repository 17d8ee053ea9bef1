"""Prometheus metrics of the service, through Ray's metrics (exported by every node's metrics agent).

Serve adds `deployment`, `replica` and `application` tags itself. Names are prefixed `ttp_`.
"""

from __future__ import annotations

# Request latency buckets in ms: sub-10 ms selects up to multi-second generations.
LATENCY_BUCKETS_MS = [5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000]


class IngressMetrics:
    """Requests by endpoint and status, and their latency (recorded by `MetricsMiddleware`)."""

    def __init__(self) -> None:
        from ray.serve import metrics

        self.requests = metrics.Counter(
            "ttp_requests", description="HTTP requests by endpoint and status code.", tag_keys=("endpoint", "status")
        )
        self.rejected = metrics.Counter(
            "ttp_rejected_requests", description="Generation requests refused with 503 (max_queued_requests).")
        self.latency = metrics.Histogram(
            "ttp_request_latency_ms",
            description="End-to-end latency inside the ingress replica, by endpoint.",
            boundaries=LATENCY_BUCKETS_MS,
            tag_keys=("endpoint",),
        )

    def observe(self, endpoint: str, status: int, seconds: float) -> None:
        self.requests.inc(tags={"endpoint": endpoint, "status": str(status)})
        self.latency.observe(seconds * 1000.0, tags={"endpoint": endpoint})


class ScorerMetrics:
    """Candidates scored and global-RM fallbacks, by the RM method that answered."""

    def __init__(self) -> None:
        from ray.serve import metrics

        self.candidates = metrics.Counter(
            "ttp_candidates_scored", description="Candidates scored by the reward model.", tag_keys=("method",)
        )
        self.fallbacks = metrics.Counter(
            "ttp_rm_fallbacks", description="Requests for users without a personal RM (global RM used).",
            tag_keys=("method",),
        )
        self.batch_size = metrics.Histogram(
            "ttp_scorer_batch_candidates",
            description="Candidates per scorer forward pass (after @serve.batch merging).",
            boundaries=[1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048],
        )

    def record(self, method: str, n_candidates: int, fallback: bool) -> None:
        self.candidates.inc(n_candidates, tags={"method": method})
        if fallback:
            self.fallbacks.inc(tags={"method": method})
