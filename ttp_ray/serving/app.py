"""The Serve application: a FastAPI ingress composed with the scorer and (optional) policy deployments.

Endpoints (OpenAPI at /openapi.json): `POST /v1/select`, `POST /v1/generate`, `POST /v1/chat/completions`
(OpenAI-compatible), `GET /v1/models`, `GET /healthz`. Without a `policy` section only /v1/select is mounted.

Entry points: `build_application(cfg)` (Python), `build_app(args)` (the `import_path` of `serve run` /
`serve deploy` configs), `run_serve(cfg)` (what `ttp serve` and `jobs/serve.py` call).

Note: this module deliberately has no `from __future__ import annotations`: FastAPI reads the route
functions' annotations at runtime, and the request models are built per deployment from the configured bounds.
"""

import logging
import time
import uuid
from typing import Any

from fastapi import FastAPI, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPBearer
from ray import serve
from ray.serve.handle import DeploymentHandle

from ttp_ray.config import load_config, validate
from ttp_ray.errors import TTPValidationError
from ttp_ray.policy.prompts import PromptTooLongError
from ttp_ray.serving.auth import BearerAuthMiddleware, resolve_token
from ttp_ray.serving.config import ServingConfig
from ttp_ray.serving.deployments import PolicyDeployment, ScoreCall, ScorerDeployment, ScoreReply
from ttp_ray.serving.errors import (
    error_response,
    internal_error_handler,
    request_validation_handler,
    ttp_validation_handler,
)
from ttp_ray.serving.middleware import BodySizeLimitMiddleware, MetricsMiddleware
from ttp_ray.serving.policy_runtime import GenerateCall, GenerateReply
from ttp_ray.serving.schemas import (
    CandidateScore,
    ChatChoice,
    ChatCompletionResponse,
    ChatMessageOut,
    ErrorResponse,
    GenerateResponse,
    Health,
    ModelCard,
    ModelList,
    ScoredCandidate,
    SelectResponse,
    TTPExtension,
    Usage,
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

    def __serve_build_asgi_app__(self) -> FastAPI:
        return build_api(self)

    async def score(self, user_id: str | None, query: str, candidates: list[str]) -> ScoreReply:
        return await self.scorer.score.remote(ScoreCall(user_id, query, candidates))

    async def generate_and_score(self, user_id: str | None, query: str, n: int) -> tuple[GenerateReply, ScoreReply]:
        assert self.policy is not None
        try:
            gen: GenerateReply = await self.policy.generate.remote(GenerateCall(user_id, query, n))
        except PromptTooLongError as e:  # the caller's query, not the server's budget, is what to change
            reason = str(getattr(e, "cause", e).args[0]).split(";")[0]
            raise TTPValidationError(f"too long for the policy's prompt budget ({reason})", parameter="query",
                                     value=len(query)) from None
        scores = await self.score(user_id, query, [c.text for c in gen.candidates])
        return gen, scores


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
    SelectRequest, GenerateRequest, ChatCompletionRequest = models.select, models.generate, models.chat
    started = int(time.time())

    api = FastAPI(title="ttp-ray personalized best-of-N", version=API_VERSION, docs_url=None, redoc_url=None,
                  description="Score candidates with a user's reward model and return the best (test-time "
                              "personalization). All /v1 endpoints need `Authorization: Bearer <token>`.")
    api.add_exception_handler(RequestValidationError, request_validation_handler)
    api.add_exception_handler(TTPValidationError, ttp_validation_handler)
    api.add_exception_handler(Exception, internal_error_handler)
    guarded = {"dependencies": [Security(_bearer)], "responses": _ERRORS}

    @api.get("/healthz", response_model=Health, tags=["ops"],
             responses={503: {"model": ErrorResponse, "description": "The reward scorer is not reachable."}})
    async def healthz() -> Health | JSONResponse:
        try:
            info = await ingress.scorer.info.remote()
        except Exception as e:  # readiness: report, do not crash
            return error_response(503, f"reward scorer unavailable: {type(e).__name__}")
        return Health(status="ok", rm_version=info["rm_version"], generation=ingress.policy is not None)

    @api.post("/v1/select", response_model=SelectResponse, tags=["best-of-n"], **guarded)
    async def select(req: SelectRequest) -> SelectResponse:  # type: ignore[valid-type]
        s = await ingress.score(req.user_id, req.query, req.candidates)
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

    @api.post("/v1/chat/completions", response_model=ChatCompletionResponse, tags=["openai"], **guarded)
    async def chat_completions(req: ChatCompletionRequest) -> ChatCompletionResponse:  # type: ignore[valid-type]
        gen, s = await ingress.generate_and_score(req.user, req.query(), req.n)
        texts = [c.text for c in gen.candidates]
        ext = TTPExtension(**_selection_fields(req.user, s, texts), personalized_prompt=gen.personalized,
                           candidates=_scored(gen, s))
        chosen = gen.candidates[ext.chosen_index]
        completion_tokens = sum(c.num_tokens for c in gen.candidates)
        return ChatCompletionResponse(
            id=f"chatcmpl-{uuid.uuid4().hex}",
            created=int(time.time()),
            model=cfg.served_model_name,
            choices=[ChatChoice(index=0, message=ChatMessageOut(content=chosen.text),
                                finish_reason="length" if chosen.truncated else "stop")],
            usage=Usage(prompt_tokens=gen.prompt_tokens, completion_tokens=completion_tokens,
                        total_tokens=gen.prompt_tokens + completion_tokens),
            ttp=ext,
        )

    return _with_middleware(api, ingress)


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
