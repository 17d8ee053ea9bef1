"""The Serve application over real HTTP: endpoints, auth, bounds, unknown users, the OpenAI client, a schema fuzz,
metrics, and a checkpoint switch under continuous traffic.

One Serve instance (free port on 127.0.0.1) for the module. Two apps: the full one (hf SmolLM2 policy + MiniLM
user-prob RM, tiny bounds so generation stays cheap) at "/", and a select-only one at "/reload" for the reload test.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ttp_ray.data.schema import PROFILE, conform
from ttp_ray.serving.config import ServingConfig

pytestmark = pytest.mark.slow

TOKEN = "test-token-" + "k" * 24
N_MAX = 3
STYLES = {  # user -> (prefix, words): distinct styles so a personal RM has something to learn
    "alice": ("[ruff]", ["lint", "rule", "fix", "check"]),
    "bob": ("docs:", ["update", "readme", "guide", "typo"]),
    "carol": ("Refactor", ["cleanup", "module", "split", "rename"]),
}
PROFILE_SECRET = "SECRET-PROFILE-MARKER-"  # every profile input holds it; no response may ever contain it


# ------------------------------------------------------------------------------------------------ data
def _profile() -> pa.Table:
    rows = []
    for u, (prefix, words) in STYLES.items():
        for i in range(8):
            w = words[i % len(words)]
            rows.append({"user_id": u, "item_id": f"{u}-{i}", "date": None, "position": i,
                         "input": f"{PROFILE_SECRET}{u}{i} Files: src/{w}_{i}.py\nDescription: {w} the {w} code path",
                         "output": f"{prefix} {w} {words[(i + 1) % len(words)]} in {w}_{i}"})
    return conform(pa.Table.from_pylist(rows), PROFILE)


def _rm_train_candidates(profile: pa.Table) -> pa.Table:
    """Pseudo-queries from the profile items; candidates = outputs of other items (own style and others'),
    golden = their ROUGE-1 against the item's real output."""
    from ttp_ray.data.schema import CANDIDATES
    from ttp_ray.scoring.rouge import rouge_f1

    items = profile.to_pylist()
    rows = []
    for k, item in enumerate(items):
        texts = [items[(k + d) % len(items)]["output"] for d in (1, 2, 3, 9, 17, 25)]
        r1, rl = rouge_f1(texts, [item["output"]] * len(texts))
        for j, text in enumerate(texts):
            rows.append({"user_id": item["user_id"], "query_id": item["item_id"], "cand_idx": j, "mode": "rm_train",
                         "query_text": item["input"], "text": text, "num_tokens": len(text.split()),
                         "logprob": None, "rouge1": float(r1[j]), "rougeL": float(rl[j])})
    return conform(pa.Table.from_pylist(rows), CANDIDATES)


def _train_rms(root: Path, profile: pa.Table) -> tuple[Path, Path]:
    """Two user-prob checkpoints (different seeds) trained in-process on the tiny tables, one MiniLM load."""
    from ttp_ray.reward.features import Featurizer
    from ttp_ray.training import TrainingConfig, train_reward_models_local

    cands = _rm_train_candidates(profile)
    featurizer = None
    out = []
    for seed in (0, 1):
        cfg = TrainingConfig.model_validate({"variants": ["user-prob"], "seed": seed,
                                             "global_stage": {"epochs": 5}, "user_stage": {"epochs": 5}})
        featurizer = featurizer or Featurizer.from_config(cfg.features)
        train_reward_models_local(cands, profile, root / f"rm_{seed}", cfg, featurizer=featurizer)
        out.append(root / f"rm_{seed}")
    return out[0], out[1]


# ------------------------------------------------------------------------------------------------ fixtures
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("serving")
    profile = _profile()
    pq.write_table(profile, root / "profile.parquet")
    token_file = root / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    rm_a, rm_b = _train_rms(root, profile)
    return {"root": root, "profile": profile, "profile_path": str(root / "profile.parquet"),
            "token_file": str(token_file), "rm_a": rm_a, "rm_b": rm_b}


def _config(data: dict[str, Any], rm_dir: Path, *, policy: bool, **extra: Any) -> ServingConfig:
    cfg: dict[str, Any] = {
        "rm_dir": str(rm_dir), "rm_variant": "user-prob", "default_n": 2,
        "bounds": {"max_n": N_MAX, "max_candidates": 8, "max_candidate_chars": 200, "max_query_chars": 300,
                   "max_user_id_chars": 16, "max_messages": 4, "max_body_bytes": 8192},
        "auth": {"token_file": data["token_file"]},
        "scorer": {"num_cpus": 0.25, "max_batch_size": 8, "max_ongoing_requests": 16},
        "ingress": {"num_cpus": 0.25},
        "max_queued_requests": 2,
        **extra,
    }
    if policy:
        cfg["policy"] = {"profile_path": data["profile_path"], "task": "commit_subject", "num_cpus": 0.5,
                         "engine": {"backend": "hf", "model": "smollm2-135m-instruct", "num_threads": 1,
                                    "sampling": {"max_tokens": 8}},
                         "rag": {"retrieval": {"k": 2}, "max_prompt_tokens": 256}}
    return ServingConfig.model_validate(cfg)


@pytest.fixture(scope="module")
def serve_port(ray_session: Any) -> Iterator[int]:
    from ray import serve

    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    yield port
    serve.shutdown()


@pytest.fixture(scope="module")
def app(serve_port: int, data: dict[str, Any]) -> Iterator[dict[str, Any]]:
    from ray import serve

    from ttp_ray.serving import build_application

    cfg = _config(data, data["rm_a"], policy=True)
    serve.run(build_application(cfg), name="ttp-test", route_prefix="/")
    base = f"http://127.0.0.1:{serve_port}"
    with httpx.Client(base_url=base, timeout=120, headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        yield {"base": base, "client": client, "cfg": cfg}
    serve.delete("ttp-test")


@pytest.fixture(scope="module")
def scorer(data: dict[str, Any]) -> Any:
    from ttp_ray.reward.scorer import RewardScorer

    return RewardScorer.from_checkpoint(data["rm_a"], variant="user-prob")


# ------------------------------------------------------------------------------------------------ tests
def test_healthz_and_openapi_are_public(app: dict[str, Any]) -> None:
    h = httpx.get(f"{app['base']}/healthz", timeout=30)
    assert h.status_code == 200 and h.json() == {"status": "ok"}  # no RM version without a token
    h = app["client"].get("/healthz")
    assert h.status_code == 200 and h.json()["status"] == "ok" and h.json()["generation"] is True
    assert h.json()["rm_version"].startswith("user-prob@")
    spec = httpx.get(f"{app['base']}/openapi.json", timeout=30).json()
    assert {"/v1/select", "/v1/generate", "/v1/chat/completions", "/v1/completions", "/v1/models",
            "/healthz"} <= set(spec["paths"])
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    req = spec["components"]["schemas"]["SelectRequest"]["properties"]
    assert req["candidates"]["maxItems"] == 8 and req["user_id"]["maxLength"] == 16  # the configured bounds


@pytest.mark.parametrize("path", ["/v1/select", "/v1/generate", "/v1/chat/completions"])
def test_auth_required(app: dict[str, Any], path: str) -> None:
    body = {"user_id": "alice", "query": "q", "candidates": ["a"]}
    for headers in ({}, {"Authorization": "Bearer wrong-token-of-some-length"}, {"Authorization": f"Basic {TOKEN}"},
                    {"Authorization": f"Bearer {TOKEN}x"}, {"Authorization": "Bearer"}):
        r = httpx.post(f"{app['base']}{path}", json=body, headers=headers, timeout=30)
        assert r.status_code == 401, (headers, r.text)
        assert r.json()["error"]["type"] == "authentication_error"
        assert r.headers["www-authenticate"] == "Bearer"
    # Auth runs before the body is read: garbage without a token is still a 401, not a 422.
    assert httpx.post(f"{app['base']}{path}", content=b"{not json", timeout=30).status_code == 401


def test_select_matches_in_process_scores(app: dict[str, Any], scorer: Any) -> None:
    cands = ["[ruff] lint rule in lint_3", "docs: update readme", "Refactor cleanup module", "[ruff] fix check"]
    r = app["client"].post("/v1/select", json={"user_id": "alice", "query": "Files: src/lint_9.py", "candidates": cands})
    assert r.status_code == 200, r.text
    out = r.json()
    expected = scorer.score("alice", "Files: src/lint_9.py", cands)
    assert [s["mu"] for s in out["scores"]] == pytest.approx(expected.mu.tolist(), abs=1e-5)
    assert [s["sigma"] for s in out["scores"]] == pytest.approx(expected.sigma.tolist(), abs=1e-5)
    assert out["chosen_index"] == int(expected.mu.argmax())
    assert out["chosen_text"] == cands[out["chosen_index"]]
    assert out["fallback"] is False and out["rm_method"] == "user-prob" and out["user_id"] == "alice"


def test_unknown_user_falls_back_to_global_rm(app: dict[str, Any], scorer: Any) -> None:
    cands = ["docs: update guide", "[ruff] lint"]
    r = app["client"].post("/v1/select", json={"user_id": "mallory", "query": "a change", "candidates": cands})
    assert r.status_code == 200, r.text
    assert r.json()["fallback"] is True
    expected = scorer.score("mallory", "a change", cands)
    assert expected.fallback and [s["mu"] for s in r.json()["scores"]] == pytest.approx(expected.mu.tolist(), abs=1e-5)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"candidates": ["c"] * 9}, "candidates"),
        ({"candidates": ["x" * 201]}, "candidates[0]"),
        ({"candidates": []}, "candidates"),
        ({"query": "q" * 301}, "query"),
        ({"query": ""}, "query"),
        ({"user_id": "u" * 17}, "user_id"),
        ({"user_id": "alice smith"}, "user_id"),
        ({"user_id": "../../etc/passwd"}, "user_id"),
        ({"user_id": None}, "user_id"),
        ({"unexpected": 1}, "unexpected"),
        ({"candidates": "not a list"}, "candidates"),
    ],
)
def test_select_bounds_are_422_naming_the_field(app: dict[str, Any], body: dict[str, Any], field: str) -> None:
    payload = {"user_id": "alice", "query": "q", "candidates": ["a", "b"], **body}
    r = app["client"].post("/v1/select", json=payload)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["param"] == field
    assert r.json()["error"]["message"].startswith(field)


@pytest.mark.parametrize(("n", "status"), [(0, 422), (N_MAX + 1, 422), (-1, 422), ("3", 422), (1.5, 422)])
def test_generate_n_bounds(app: dict[str, Any], n: Any, status: int) -> None:
    r = app["client"].post("/v1/generate", json={"user_id": "alice", "query": "q", "n": n})
    assert r.status_code == status and r.json()["error"]["param"] == "n", r.text


def test_query_over_the_prompt_budget_is_422_not_500(app: dict[str, Any]) -> None:
    # Within bounds.max_query_chars, but ~1000 tokens: over the policy's max_prompt_tokens (256).
    r = app["client"].post("/v1/generate", json={"user_id": "alice", "query": "\U0001F642" * 300, "n": 1})
    assert r.status_code == 422, r.text
    assert r.json()["error"]["param"] == "query" and "prompt budget" in r.json()["error"]["message"]


def test_body_size_and_malformed_bodies(app: dict[str, Any]) -> None:
    c = app["client"]
    big = json.dumps({"user_id": "alice", "query": "q", "candidates": ["a"], "pad": "x" * 9000}).encode()
    r = c.post("/v1/select", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["param"] == "body"

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while streaming
        yield b'{"user_id": "alice", "query": "'
        for _ in range(20):
            yield b"q" * 1000
        yield b'", "candidates": ["a"]}'

    r = c.post("/v1/select", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert c.post("/v1/select", content=b"{not json", headers={"content-type": "application/json"}).status_code == 422
    assert c.post("/v1/select", content=b"user_id=a", headers={"content-type": "text/plain"}).status_code == 422
    r = c.post("/v1/select", content=b'{"user_id": "alice", "query": "\\ud800", "candidates": ["a"]}',
               headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["error"]["param"] == "query"
    for raw in (b'{"user_id": "alice", "query": "q", "candidates": ["a"], "\\udfff": 1}',
                b'{"user_id": "alice", "query": "q", "candidates": ["a"], "x": NaN}'):
        r = c.post("/v1/select", content=raw, headers={"content-type": "application/json"})
        assert r.status_code == 422 and r.json()["error"]["code"] == 422  # echoing the input stays valid JSON
    assert c.get("/v1/select").status_code == 405
    assert c.get("/v1/nope").status_code == 404


def test_generate_personalized_and_profile_never_returned(app: dict[str, Any]) -> None:
    r = app["client"].post("/v1/generate", json={"user_id": "alice", "query": "Files: src/rule_7.py", "n": 2})
    assert r.status_code == 200, r.text
    out = r.json()
    assert len(out["candidates"]) == 2 and out["personalized_prompt"] is True and out["fallback"] is False
    mus = [c["mu"] for c in out["candidates"]]
    assert out["chosen_index"] == mus.index(max(mus))
    assert out["chosen_text"] == out["candidates"][out["chosen_index"]]["text"]
    assert all(c["num_tokens"] >= 1 and c["sigma"] > 0 for c in out["candidates"])
    assert PROFILE_SECRET not in r.text and "prompt" not in {k for c in out["candidates"] for k in c}

    r = app["client"].post("/v1/generate", json={"user_id": "newcomer", "query": "Files: src/a.py"})
    assert r.status_code == 200, r.text
    assert r.json()["fallback"] is True and r.json()["personalized_prompt"] is False
    assert len(r.json()["candidates"]) == app["cfg"].default_n


def _openai(app: dict[str, Any]) -> Any:
    import openai

    return openai.OpenAI(base_url=f"{app['base']}/v1", api_key=TOKEN, max_retries=0, timeout=120)


MSGS = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "Files: src/guide_2.py"}]


def test_openai_chat_best_of_n(app: dict[str, Any]) -> None:
    """OpenAI semantics: best_of candidates sampled, the n best by mu returned best first, usage counts all."""
    import openai

    client = _openai(app)
    resp = client.chat.completions.create(model="ttp-best-of-n", messages=MSGS, n=2, user="bob",
                                          extra_body={"best_of": 3, "ttp_candidates": True})
    ext = resp.model_extra["ttp"]
    assert len(resp.choices) == 2 and [c.index for c in resp.choices] == [0, 1]
    assert resp.choices[0].message.role == "assistant" and ext["best_of"] == 3 and len(ext["candidates"]) == 3
    assert ext["user_id"] == "bob" and ext["fallback"] is False and ext["selection"] == "rm"
    mus = [c["mu"] for c in ext["candidates"]]
    ranked = sorted(range(3), key=lambda i: -mus[i])
    assert [c["index"] for c in ext["choices"]] == ranked[:2]
    assert [c.message.content for c in resp.choices] == [ext["candidates"][i]["text"] for i in ranked[:2]]
    assert resp.choices[0].message.content == ext["chosen_text"]
    assert resp.usage.completion_tokens == sum(c["num_tokens"] for c in ext["candidates"])
    assert resp.usage.prompt_tokens > 0 and resp.model == "ttp-best-of-n"
    assert [m.id for m in client.models.list().data] == ["ttp-best-of-n"]

    # safety_identifier picks the user as `user` does; an unknown one falls back to the global RM, flagged.
    safe = client.chat.completions.create(model="x", messages=MSGS, safety_identifier="alice")
    assert safe.model_extra["ttp"]["user_id"] == "alice" and safe.model_extra["ttp"]["fallback"] is False
    anonymous = client.chat.completions.create(model="x", messages=[{"role": "user", "content": "Files: a.py"}],
                                               safety_identifier="nobody")
    a_ext = anonymous.model_extra["ttp"]
    assert a_ext["fallback"] is True and a_ext["user_id"] == "nobody" and a_ext["candidates"] is None
    assert len(anonymous.choices) == 1 and a_ext["best_of"] == app["cfg"].default_n

    # Sampling parameters are honoured: max_tokens below the deployment's caps every candidate.
    short = client.chat.completions.create(model="x", messages=MSGS, max_tokens=2, temperature=0.9, top_p=0.8,
                                           seed=7, stop=["\n"], extra_body={"best_of": 2, "ttp_candidates": True})
    assert all(c["num_tokens"] <= 2 for c in short.model_extra["ttp"]["candidates"])
    assert short.usage.completion_tokens <= 4
    # selection by MBR / log-prob: the RM's mu is still reported, the order follows the method.
    for method in ("mbr", "logprob"):
        r = client.chat.completions.create(model="x", messages=MSGS, n=2, user="bob",
                                           extra_body={"best_of": 3, "selection": method})
        assert r.model_extra["ttp"]["selection"] == method and len(r.choices) == 2

    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{app['base']}/v1", api_key="wrong-" + TOKEN, max_retries=0).models.list()
    for kwargs, name in [({"n": N_MAX + 1}, "n"), ({"n": 3, "extra_body": {"best_of": 2}}, "best_of"),
                         ({"max_tokens": 9}, "max_tokens"), ({"logit_bias": {"1": 2}}, "logit_bias"),
                         ({"presence_penalty": 0.5}, "presence_penalty"), ({"tools": []}, "tools")]:
        with pytest.raises(openai.UnprocessableEntityError, match=name):
            client.chat.completions.create(model="m", messages=MSGS, **kwargs)


def test_openai_chat_stream(app: dict[str, Any]) -> None:
    stream = _openai(app).chat.completions.create(model="x", messages=MSGS, n=2, user="carol", stream=True,
                                                  extra_body={"best_of": 3})
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" for c in chunks) and len({c.id for c in chunks}) == 1
    text = {0: "", 1: ""}
    finish = {}
    for c in chunks:
        for ch in c.choices:
            text[ch.index] += ch.delta.content or ""
            if ch.finish_reason:
                finish[ch.index] = ch.finish_reason
    last = chunks[-1]
    ext = last.model_extra["ttp"]
    assert set(finish) == {0, 1} and ext["best_of"] == 3 and last.usage.completion_tokens > 0
    assert text[0] == ext["chosen_text"]
    raw = app["client"].post("/v1/chat/completions", json={"model": "x", "messages": MSGS, "stream": True})
    assert raw.headers["content-type"].startswith("text/event-stream")
    assert raw.text.rstrip().endswith("data: [DONE]") and raw.text.count("data: [DONE]") == 1


def test_openai_completions(app: dict[str, Any]) -> None:
    import openai

    client = _openai(app)
    resp = client.completions.create(model="x", prompt="Files: src/lint_1.py", n=2, best_of=3, user="alice",
                                     max_tokens=4)
    ext = resp.model_extra["ttp"]
    assert resp.object == "text_completion" and len(resp.choices) == 2 and ext["best_of"] == 3
    assert resp.choices[0].text == ext["chosen_text"] and ext["user_id"] == "alice"
    chunks = list(client.completions.create(model="x", prompt="Files: a.py", best_of=2, stream=True,
                                            extra_body={"safety_identifier": "bob"}))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == chunks[-1].model_extra["ttp"]["chosen_text"]
    assert chunks[-1].model_extra["ttp"]["user_id"] == "bob"
    with pytest.raises(openai.UnprocessableEntityError, match="echo"):
        client.completions.create(model="x", prompt="q", echo=True)
    with pytest.raises(openai.UnprocessableEntityError, match="suffix"):
        client.completions.create(model="x", prompt="q", suffix="!")


def test_http_errors_share_the_error_json(app: dict[str, Any]) -> None:
    for method, path, status in [("GET", "/v1/nope", 404), ("GET", "/v1/chat/completions", 405),
                                 ("DELETE", "/v1/select", 405)]:
        r = app["client"].request(method, path)
        assert r.status_code == status, r.text
        assert r.json()["error"]["code"] == status and r.json()["error"]["message"]


def test_overload_is_503_with_retry_after(app: dict[str, Any]) -> None:
    """max_queued_requests=2 (the module's config): 8 simultaneous generations -> some 503s, the rest 200."""
    from concurrent.futures import ThreadPoolExecutor

    body = {"model": "x", "messages": MSGS, "best_of": 3}
    with ThreadPoolExecutor(8) as pool:
        rs = list(pool.map(lambda _: app["client"].post("/v1/chat/completions", json=body), range(8)))
    codes = sorted(r.status_code for r in rs)
    assert set(codes) == {200, 503} and codes.count(200) >= 2, codes
    busy = next(r for r in rs if r.status_code == 503)
    assert busy.headers["retry-after"] == "1" and busy.json()["error"]["type"] == "overloaded"
    assert app["client"].post("/v1/chat/completions", json=body).status_code == 200  # recovered


def test_stalled_scorer_is_504(serve_port: int, data: dict[str, Any]) -> None:
    """A scorer slower than the deadline (here: any real scorer, the deadline being 1 ms) -> 504, the app stays
    healthy."""
    from ray import serve

    from ttp_ray.serving import build_application

    serve.run(build_application(_config(data, data["rm_a"], policy=False, request_deadline_s=0.001)),
              name="ttp-slow", route_prefix="/slow")
    try:
        base = f"http://127.0.0.1:{serve_port}/slow"
        r = httpx.post(f"{base}/v1/select", json={"user_id": "alice", "query": "q", "candidates": ["a", "b"]},
                       headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)
        assert r.status_code == 504 and r.json()["error"]["code"] == 504, r.text
        assert httpx.get(f"{base}/healthz", timeout=30).json() == {"status": "ok"}
    finally:
        serve.delete("ttp-slow")


def test_schema_fuzz_finds_no_server_error(app: dict[str, Any]) -> None:
    """Property-based fuzz of every operation from the live OpenAPI schema (valid and invalid inputs)."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from schemathesis import GenerationMode
    from schemathesis.specs.openapi.checks import response_schema_conformance

    schema = schemathesis.openapi.from_url(f"{app['base']}/openapi.json", timeout=30)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    seen: dict[str, list[int]] = {}
    for result in schema.get_all_operations():
        op = result.ok()
        slow = op.path in ("/v1/generate", "/v1/chat/completions", "/v1/completions")
        strategy = op.as_strategy(GenerationMode.POSITIVE) | op.as_strategy(GenerationMode.NEGATIVE)

        @settings(max_examples=8 if slow else 25, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        @given(case=strategy)
        def run(case: Any) -> None:
            response = case.call(base_url=app["base"], headers=headers, timeout=120)
            seen.setdefault(case.operation.label, []).append(response.status_code)
            assert response.status_code < 500, (case.body, response.text[:500])
            case.validate_response(response, checks=[response_schema_conformance])

        run()
    assert len(seen) == 6
    statuses = {s for codes in seen.values() for s in codes}
    assert 200 in statuses and 422 in statuses  # both valid and invalid inputs reached the app


def test_prometheus_metrics_exported(app: dict[str, Any], ray_session: Any) -> None:
    app["client"].post("/v1/select", json={"user_id": "alice", "query": "q", "candidates": ["a", "b"]})
    app["client"].post("/v1/select", json={"user_id": "nobody", "query": "q", "candidates": ["a"]})
    port = ray_session.nodes()[0]["MetricsExportPort"]
    wanted = ("ray_ttp_requests_total", 'endpoint="/v1/select"', 'status="200"')
    text = ""
    for _ in range(60):  # the metrics agent exports every few seconds
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        lines = text.splitlines()
        if (any(all(w in ln for w in wanted) for ln in lines) and "ray_ttp_candidates_scored_total" in text
                and "ray_ttp_rm_fallbacks_total" in text and "ray_ttp_request_latency_ms_bucket" in text):
            break
        time.sleep(1)
    else:
        pytest.fail("ttp metrics not exported:\n" + "\n".join(ln for ln in text.splitlines() if "ttp" in ln))


def test_checkpoint_switch_under_load_drops_nothing(serve_port: int, data: dict[str, Any]) -> None:
    """Under continuous traffic: (1) in-place reload a -> b (`reconfigure`, what `serve deploy` of a new
    user_config does), (2) redeploy on a with `serve.run` (surge rolling update). Zero failures; each new
    version answers."""
    from ray import serve

    from ttp_ray.serving import build_application
    from ttp_ray.serving.deployments import checkpoint_version

    base = f"http://127.0.0.1:{serve_port}/reload"
    serve.run(build_application(_config(data, data["rm_a"], policy=False)), name="ttp-reload",
              route_prefix="/reload")
    v_a, v_b = (checkpoint_version(str(data[k]), "user-prob") for k in ("rm_a", "rm_b"))
    body = {"user_id": "carol", "query": "Files: src/split_1.py", "candidates": ["Refactor split", "docs: x"]}
    results: list[tuple[int, str]] = []
    stop = threading.Event()

    def traffic() -> None:
        with httpx.Client(base_url=base, timeout=60, headers={"Authorization": f"Bearer {TOKEN}"}) as c:
            while not stop.is_set():
                try:
                    r = c.post("/v1/select", json=body)
                    results.append((r.status_code, r.json().get("rm_version", r.text[:200])))
                except (httpx.HTTPError, ValueError) as e:  # a dropped connection is a failure too
                    results.append((-1, repr(e)))

    def wait_for(version: str, after: int) -> int:
        deadline = time.time() + 90
        while time.time() < deadline and not (len(results) > after + 5 and results[-1][1] == version):
            time.sleep(0.05)
        return len(results)

    t = threading.Thread(target=traffic, daemon=True)
    try:
        t.start()
        n0 = wait_for(v_a, 0)
        scorer = serve.get_deployment_handle("RewardScorer", app_name="ttp-reload")
        scorer.reconfigure.remote({"rm_dir": str(data["rm_b"]), "rm_variant": "user-prob"}).result(timeout_s=120)
        n1 = wait_for(v_b, n0)
        serve.run(build_application(_config(data, data["rm_a"], policy=False)), name="ttp-reload",
                  route_prefix="/reload")
        wait_for(v_a, n1)
    finally:
        stop.set()
        t.join(timeout=60)
        serve.delete("ttp-reload")
    failures = [r for r in results if r[0] != 200]
    assert not failures, failures[:5]
    versions = [v for _, v in results]
    first_b = versions.index(v_b)
    assert set(versions[:first_b]) == {v_a} and first_b >= 5
    assert set(versions[first_b:n1]) == {v_b}  # the in-place swap is atomic: no request sees a again
    assert versions[-1] == v_a  # the rolling update's new replicas answer (old and new may alternate meanwhile)
