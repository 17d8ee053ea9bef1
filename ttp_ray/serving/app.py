"""The Serve application: a FastAPI ingress composed with the scorer and (optional) policy deployments.

Endpoints (OpenAPI at /openapi.json): `POST /v1/select`, `POST /v1/generate`, `POST /v1/chat/completions` and
`POST /v1/completions` (OpenAI-compatible best-of-N, see openai_api.py), `GET /v1/models`, `GET /healthz`.
Generation requests beyond `max_queued_requests` in flight are a 503 with `Retry-After`; one past
`request_deadline_s` is cancelled and answered 504. Without a `policy` section only /v1/select is mounted.

Entry points: `build_application(cfg)` (Python), `build_app(args)` (the `import_path` of `serve run` /
`serve deploy` configs), `run_serve(cfg)` (what `ttp serve` and `jobs/serve.py` call).

Note: this module deliberately has no `from __future__ import annotations`: FastAPI reads the route
functions' annotations at runtime, and the request models are built per deployment from the configured bounds.
"""

import asyncio
import hmac
import logging
import time
from typing import Any

from fastapi import FastAPI, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.security import HTTPBearer
from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.exceptions import HTTPException as StarletteHTTPException

from ttp_ray.config import load_config, validate
from ttp_ray.errors import TTPValidationError
from ttp_ray.policy.prompts import PromptTooLongError
from ttp_ray.serving import openai_api
from ttp_ray.serving.auth import BearerAuthMiddleware, resolve_token
from ttp_ray.serving.config import ServingConfig
from ttp_ray.serving.deployments import PolicyDeployment, ScoreCall, ScorerDeployment, ScoreReply
from ttp_ray.serving.errors import (
    error_response,
    http_error_handler,
    internal_error_handler,
    request_validation_handler,
    ttp_validation_handler,
)
from ttp_ray.serving.middleware import BodySizeLimitMiddleware, MetricsMiddleware
from ttp_ray.serving.policy_runtime import GenerateCall, GenerateReply, SamplingOverride
from ttp_ray.serving.schemas import (
    CandidateScore,
    ChatChoice,
    ChatCompletionResponse,
    ChatMessageOut,
    CompletionChoice,
    CompletionResponse,
    ErrorResponse,
    GenerateResponse,
    Health,
    ModelCard,
    ModelList,
    ScoredCandidate,
    SelectResponse,
    build_request_models,
)

log = logging.getLogger("ray.serve")

API_VERSION = "1"
# Declares the scheme in the OpenAPI schema; `BearerAuthMiddleware` enforces it before the body is read.
_bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer <token>`")
_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "Missing or wrong bearer token."},
    413: {"model": ErrorResponse, "description": "Body larger than bounds.max_body_bytes."},
}


@serve.deployment(name="Ingress")
@serve.ingress()
class Ingress:
    """HTTP front door: auth, bounds, routing to the policy and scorer handles, response assembly."""

    def __init__(self, config: dict[str, Any], scorer: DeploymentHandle, policy: DeploymentHandle | None) -> None:
        from ttp_ray.serving.metrics import IngressMetrics

        self.cfg = ServingConfig.model_validate(config)
        self.token = resolve_token(self.cfg.auth)  # raises: the replica refuses to start without a token
        self.scorer = scorer
        self.policy = policy
        self.metrics = IngressMetrics()
        self.in_flight = 0  # generation requests admitted and not yet answered (the bounded queue)
        self.health: tuple[float, dict[str, Any]] | None = None  # (monotonic time, scorer info) last seen ok

    def __serve_build_asgi_app__(self) -> FastAPI:
        return build_api(self)

    async def score(self, user_id: str | None, query: str, candidates: list[str]) -> ScoreReply:
        return await self.scorer.score.remote(ScoreCall(user_id, query, candidates))

    async def generate_and_score(self, user_id: str | None, query: str, n: int,
                                 sampling: SamplingOverride | None = None) -> tuple[GenerateReply, ScoreReply]:
        """Admission (503 past `max_queued_requests`) and deadline (504) around generate-then-score."""
        if self.in_flight >= self.cfg.max_queued_requests:
            self.metrics.rejected.inc()
            raise Overloaded(f"{self.in_flight} generation requests in flight (max_queued_requests "
                             f"{self.cfg.max_queued_requests}); retry later")
        self.in_flight += 1
        try:
            return await asyncio.wait_for(self._generate_and_score(user_id, query, n, sampling or SamplingOverride()),
                                          self.cfg.request_deadline_s)
        except TimeoutError:  # wait_for cancelled the handle calls: Serve cancels them in the replicas too
            raise DeadlineExceeded(f"not answered within request_deadline_s={self.cfg.request_deadline_s}") from None
        finally:
            self.in_flight -= 1

    async def _generate_and_score(self, user_id: str | None, query: str, n: int,
                                  sampling: SamplingOverride) -> tuple[GenerateReply, ScoreReply]:
        assert self.policy is not None
        try:
            gen: GenerateReply = await self.policy.generate.remote(GenerateCall(user_id, query, n, sampling))
        except PromptTooLongError as e:  # the caller's query, not the server's budget, is what to change
            reason = str(getattr(e, "cause", e).args[0]).split(";")[0]
            raise TTPValidationError(f"too long for the policy's prompt budget ({reason})", parameter="query",
                                     value=len(query)) from None
        scores = await self.score(user_id, query, [c.text for c in gen.candidates])
        return gen, scores


class Overloaded(Exception):
    """Admission refused: answered 503 with Retry-After."""


class DeadlineExceeded(Exception):
    """The request's deadline passed: answered 504."""


def _selection_fields(user_id: str | None, s: ScoreReply, texts: list[str]) -> dict[str, Any]:
    best = s.best()
    return {"user_id": user_id, "fallback": s.fallback, "rm_method": s.method, "rm_version": s.rm_version,
            "chosen_index": best, "chosen_text": texts[best]}


def _scored(gen: GenerateReply, s: ScoreReply) -> list[ScoredCandidate]:
    return [
        ScoredCandidate(index=i, text=c.text, num_tokens=c.num_tokens, mu=s.mu[i],
                        sigma=None if s.sigma is None else s.sigma[i])
        for i, c in enumerate(gen.candidates)
    ]


def build_api(ingress: Ingress) -> FastAPI:
    """The FastAPI app of one ingress replica (routes close over the replica's handles and config)."""
    cfg = ingress.cfg
    max_tokens = cfg.policy.engine.sampling.max_tokens if cfg.policy is not None else None
    models = build_request_models(cfg.bounds, cfg.default_n, max_tokens)
    SelectRequest, GenerateRequest = models.select, models.generate
    ChatCompletionRequest, CompletionRequest = models.chat, models.completion
    started = int(time.time())

    api = FastAPI(title="ttp-ray personalized best-of-N", version=API_VERSION, docs_url=None, redoc_url=None,
                  description="Score candidates with a user's reward model and return the best (test-time "
                              "personalization). All /v1 endpoints need `Authorization: Bearer <token>`.")
    api.add_exception_handler(RequestValidationError, request_validation_handler)
    api.add_exception_handler(TTPValidationError, ttp_validation_handler)
    api.add_exception_handler(StarletteHTTPException, http_error_handler)  # 400/404/405: the same error JSON
    api.add_exception_handler(Overloaded, lambda _, e: _retry_later(ingress, str(e)))
    api.add_exception_handler(DeadlineExceeded, lambda _, e: error_response(504, str(e), err_type="timeout"))
    api.add_exception_handler(Exception, internal_error_handler)
    guarded = {"dependencies": [Security(_bearer)], "responses": _ERRORS}
    streaming = {**guarded, "responses": {**_ERRORS, 200: {"content": {"text/event-stream": {}}}}}
    token = ingress.token.encode() if ingress.token else None

    @api.get("/healthz", response_model=Health, response_model_exclude_none=True, tags=["ops"],
             responses={503: {"model": ErrorResponse, "description": "The reward scorer is not reachable."}})
    async def healthz(request: Request) -> Health | JSONResponse:
        """ok / not ok from the scorer's state cached for `_HEALTH_TTL_S`, asked with a timeout when stale.
        The RM version and whether generation is served only with a valid bearer token."""
        now = time.monotonic()
        if ingress.health is None or now - ingress.health[0] > _HEALTH_TTL_S:
            try:
                info = await asyncio.wait_for(ingress.scorer.info.remote(), _HEALTH_TIMEOUT_S)
            except Exception:  # readiness: report, do not crash; the reason stays in the logs
                log.warning("healthz: reward scorer not answering", exc_info=True)
                ingress.health = None
                return error_response(503, "not ok")
            ingress.health = (now, info)
        if not _authorized(request, token):
            return Health(status="ok")
        return Health(status="ok", rm_version=ingress.health[1]["rm_version"], generation=ingress.policy is not None)

    @api.post("/v1/select", response_model=SelectResponse, tags=["best-of-n"], **guarded)
    async def select(req: SelectRequest) -> SelectResponse:  # type: ignore[valid-type]
        try:
            s = await asyncio.wait_for(ingress.score(req.user_id, req.query, req.candidates),
                                       cfg.request_deadline_s)
        except TimeoutError:
            raise DeadlineExceeded(f"not answered within request_deadline_s={cfg.request_deadline_s}") from None
        return SelectResponse(
            **_selection_fields(req.user_id, s, req.candidates),
            scores=[CandidateScore(index=i, mu=m, sigma=None if s.sigma is None else s.sigma[i])
                    for i, m in enumerate(s.mu)],
        )

    @api.get("/v1/models", response_model=ModelList, tags=["openai"], **guarded)
    async def list_models() -> ModelList:
        return ModelList(data=[ModelCard(id=cfg.served_model_name, created=started)])

    if ingress.policy is None:
        return _with_middleware(api, ingress)

    @api.post("/v1/generate", response_model=GenerateResponse, tags=["best-of-n"], **guarded)
    async def generate(req: GenerateRequest) -> GenerateResponse:  # type: ignore[valid-type]
        gen, s = await ingress.generate_and_score(req.user_id, req.query, req.n)
        texts = [c.text for c in gen.candidates]
        return GenerateResponse(**_selection_fields(req.user_id, s, texts), personalized_prompt=gen.personalized,
                                candidates=_scored(gen, s))

    async def best_of_n(req: Any) -> tuple[GenerateReply, ScoreReply, list[int], Any]:
        gen, s = await ingress.generate_and_score(req.user_id(), req.query(), req.candidates_to_sample(),
                                                  openai_api.sampling_of(req))
        order = openai_api.rank(req.selection, gen, s)
        return gen, s, order, openai_api.extension(req, gen, s, order)

    def stream(chat: bool, req: Any, gen: GenerateReply, order: list[int], ext: Any) -> StreamingResponse:
        return StreamingResponse(openai_api.sse_chunks(chat, cfg.served_model_name, gen, order, req.n, ext),
                                 media_type="text/event-stream")

    @api.post("/v1/chat/completions", response_model=ChatCompletionResponse, tags=["openai"], **streaming)
    async def chat_completions(req: ChatCompletionRequest) -> ChatCompletionResponse | StreamingResponse:  # type: ignore[valid-type]
        gen, s, order, ext = await best_of_n(req)
        if req.stream:
            return stream(True, req, gen, order, ext)
        return ChatCompletionResponse(
            id=openai_api.new_id(True), created=int(time.time()), model=cfg.served_model_name,
            choices=[ChatChoice(index=k, message=ChatMessageOut(content=gen.candidates[i].text),
                                finish_reason=openai_api.finish_reason(gen, i)) for k, i in enumerate(order[:req.n])],
            usage=openai_api.usage(gen), ttp=ext)

    @api.post("/v1/completions", response_model=CompletionResponse, tags=["openai"], **streaming)
    async def completions(req: CompletionRequest) -> CompletionResponse | StreamingResponse:  # type: ignore[valid-type]
        gen, s, order, ext = await best_of_n(req)
        if req.stream:
            return stream(False, req, gen, order, ext)
        return CompletionResponse(
            id=openai_api.new_id(False), created=int(time.time()), model=cfg.served_model_name,
            choices=[CompletionChoice(index=k, text=gen.candidates[i].text,
                                      finish_reason=openai_api.finish_reason(gen, i))
                     for k, i in enumerate(order[:req.n])],
            usage=openai_api.usage(gen), ttp=ext)

    return _with_middleware(api, ingress)


_HEALTH_TTL_S = 5.0  # how long a scorer answer stands for /healthz
_HEALTH_TIMEOUT_S = 2.0  # how long /healthz waits for the scorer when its cached answer is stale


def _retry_later(ingress: Ingress, message: str) -> JSONResponse:
    response = error_response(503, message, err_type="overloaded")
    response.headers["Retry-After"] = str(ingress.cfg.retry_after_s)
    return response


def _authorized(request: Request, token: bytes | None) -> bool:
    if token is None:
        return True
    scheme, _, presented = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(presented.strip().encode(), token)


def _with_middleware(api: FastAPI, ingress: Ingress) -> FastAPI:
    # Starlette runs the last-added middleware first: metrics see everything, auth runs before the body cap,
    # and the body cap runs before FastAPI parses anything.
    api.add_middleware(BodySizeLimitMiddleware, max_bytes=ingress.cfg.bounds.max_body_bytes)
    api.add_middleware(BearerAuthMiddleware, token=ingress.token)
    routes = frozenset(r.path for r in api.routes if hasattr(r, "path"))
    api.add_middleware(MetricsMiddleware, observe=ingress.metrics.observe, routes=routes)
    return api


# ------------------------------------------------------------------------------------------- builders
def build_application(cfg: ServingConfig) -> serve.Application:
    """Bind the deployment graph for `cfg`. Fails fast (on the caller) when no token is configured."""
    resolve_token(cfg.auth)
    logging_config = {"enable_access_log": cfg.access_log}
    scorer = ScorerDeployment.options(
        **cfg.scorer.serve_options(), logging_config=logging_config,
        user_config={"rm_dir": cfg.rm_dir, "rm_variant": cfg.rm_variant, "rm_version": cfg.rm_version},
    ).bind(cfg.scorer.max_batch_size, cfg.scorer.batch_wait_timeout_s, cfg.scorer.max_ongoing_requests,
           cfg.scorer.device, cfg.scorer.torch_threads)
    policy = None
    if cfg.policy is not None:
        policy = PolicyDeployment.options(**cfg.policy.serve_options(), logging_config=logging_config).bind(
            cfg.policy.model_dump(mode="json"))
    return Ingress.options(**cfg.ingress.serve_options(), logging_config=logging_config).bind(
        cfg.model_dump(mode="json"), scorer, policy)


def build_app(args: dict[str, Any]) -> serve.Application:
    """Application builder for Serve configs (`import_path: ttp_ray.serving.app:build_app`).

    `args` is either `{config: <yaml path>, overrides: [key=value, ...]}` or the `ServingConfig` fields inline.
    """
    args = dict(args)
    if "config" in args:
        path, overrides = args.pop("config"), args.pop("overrides", None)
        if args:
            raise TTPValidationError(f"with `config`, only `overrides` may be given; got {sorted(args)}",
                                     parameter="args")
        return build_application(load_config(ServingConfig, path, overrides))
    return build_application(validate(ServingConfig, args, source="serve args"))


def run_serve(cfg: ServingConfig, *, blocking: bool = True) -> DeploymentHandle:
    """Start Serve's HTTP proxy on `cfg.host:cfg.port` and deploy the app (Ray must be initialised)."""
    serve.start(http_options={"host": cfg.host, "port": cfg.port, "request_timeout_s": cfg.request_timeout_s})
    handle = serve.run(build_application(cfg), name=cfg.app_name, route_prefix=cfg.route_prefix,
                       blocking=blocking)
    log.info("ttp serving at http://%s:%d%s", cfg.host, cfg.port, cfg.route_prefix)
    return handle
