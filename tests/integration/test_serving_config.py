"""Serving config, token resolution and request bounds: the parts that decide before any replica starts."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from ttp_ray.config import validate
from ttp_ray.errors import TTPValidationError
from ttp_ray.serving.auth import resolve_token
from ttp_ray.serving.config import AuthConfig, BoundsConfig, ServingConfig
from ttp_ray.serving.schemas import build_request_models

REPO = Path(__file__).resolve().parents[2]
TOKEN = "t0k3n-" + "x" * 26


def test_shipped_serve_config_args_validate() -> None:
    from ray.serve.schema import ServeDeploySchema

    cfg = yaml.safe_load((REPO / "cluster" / "serve_config.yaml").read_text())
    ServeDeploySchema.model_validate(cfg)  # what `serve run` / `serve deploy` accept
    (app,) = cfg["applications"]
    assert app["import_path"] == "ttp_ray.serving.app:build_app"
    parsed = validate(ServingConfig, app["args"], source="serve_config.yaml")
    assert parsed.policy is not None and parsed.rm_variant == "user-prob"


def test_unknown_and_inconsistent_keys_fail() -> None:
    with pytest.raises(TTPValidationError, match="unknown keys: \\['bounds.max_nn'\\]"):
        validate(ServingConfig, {"rm_dir": "x", "bounds": {"max_nn": 3}})
    with pytest.raises(TTPValidationError, match="default_n \\(9\\) must be <= bounds.max_n \\(4\\)"):
        validate(ServingConfig, {"rm_dir": "x", "default_n": 9, "bounds": {"max_n": 4}})
    with pytest.raises(TTPValidationError, match="max_batch_size \\(64\\) must be <= max_ongoing_requests"):
        validate(ServingConfig, {"rm_dir": "x", "scorer": {"max_batch_size": 64, "max_ongoing_requests": 8}})
    with pytest.raises(TTPValidationError, match="user_id_pattern is not a valid regular expression"):
        validate(ServingConfig, {"rm_dir": "x", "bounds": {"user_id_pattern": "[a-"}})


def test_deployment_options_follow_config() -> None:
    cfg = validate(ServingConfig, {"rm_dir": "x", "scorer": {"autoscaling": {"min_replicas": 1, "max_replicas": 3},
                                                               "max_ongoing_requests": 32}})
    opts = cfg.scorer.serve_options()
    assert opts["autoscaling_config"]["max_replicas"] == 3 and "num_replicas" not in opts
    assert opts["max_ongoing_requests"] == 32
    assert cfg.ingress.serve_options()["num_replicas"] == 1


def test_token_from_env_or_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TTP_TEST_TOKEN_ENV", TOKEN)
    assert resolve_token(AuthConfig(token_env="TTP_TEST_TOKEN_ENV")) == TOKEN
    f = tmp_path / "token"
    f.write_text("file-" + TOKEN + "\n")
    f.chmod(0o600)
    assert resolve_token(AuthConfig(token_env="TTP_TEST_TOKEN_ENV", token_file=str(f))) == "file-" + TOKEN


def test_no_token_refuses_unless_explicitly_allowed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TTP_TEST_TOKEN_ENV", raising=False)
    with pytest.raises(TTPValidationError, match="no API token: set \\$TTP_TEST_TOKEN_ENV"):
        resolve_token(AuthConfig(token_env="TTP_TEST_TOKEN_ENV"))
    assert resolve_token(AuthConfig(token_env="TTP_TEST_TOKEN_ENV", allow_unauthenticated=True)) is None
    with pytest.raises(TTPValidationError, match="auth.token_file not found"):
        resolve_token(AuthConfig(token_file=str(tmp_path / "missing")))
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(TTPValidationError, match="auth.token_file is empty"):
        resolve_token(AuthConfig(token_file=str(tmp_path / "empty")))
    monkeypatch.setenv("TTP_TEST_TOKEN_ENV", "short")
    with pytest.raises(TTPValidationError, match="is 5 characters; use at least 16"):
        resolve_token(AuthConfig(token_env="TTP_TEST_TOKEN_ENV"))


def test_build_application_refuses_to_start_without_token(monkeypatch: pytest.MonkeyPatch) -> None:
    from ttp_ray.serving import build_application

    monkeypatch.delenv("TTP_TEST_TOKEN_ENV", raising=False)
    cfg = validate(ServingConfig, {"rm_dir": "x", "auth": {"token_env": "TTP_TEST_TOKEN_ENV"}})
    with pytest.raises(TTPValidationError, match="no API token"):
        build_application(cfg)


def _field_errors(model: type, payload: dict) -> set[str]:
    with pytest.raises(ValidationError) as e:
        model.model_validate(payload)
    return {".".join(str(p) for p in err["loc"]) for err in e.value.errors()}


def test_request_models_enforce_each_bound() -> None:
    b = BoundsConfig(max_n=4, max_candidates=3, max_candidate_chars=10, max_query_chars=20, max_user_id_chars=8,
                     max_messages=2)
    m = build_request_models(b, default_n=2, max_tokens=16)
    ok = {"user_id": "u1", "query": "q", "candidates": ["a", "b"]}
    assert m.select.model_validate(ok).candidates == ["a", "b"]
    assert _field_errors(m.select, {**ok, "candidates": ["a"] * 4}) == {"candidates"}
    assert _field_errors(m.select, {**ok, "candidates": ["x" * 11]}) == {"candidates.0"}
    assert _field_errors(m.select, {**ok, "candidates": []}) == {"candidates"}
    assert _field_errors(m.select, {**ok, "query": "q" * 21}) == {"query"}
    assert _field_errors(m.select, {**ok, "user_id": "u" * 9}) == {"user_id"}
    assert _field_errors(m.select, {**ok, "user_id": "bad id"}) == {"user_id"}
    assert _field_errors(m.select, {**ok, "user_id": "../etc"}) == {"user_id"}
    assert _field_errors(m.select, {**ok, "query": "\ud800"}) == {"query"}
    assert _field_errors(m.select, {**ok, "extra": 1}) == {"extra"}
    assert m.generate.model_validate({"user_id": "u1", "query": "q"}).n == 2
    assert _field_errors(m.generate, {"user_id": "u1", "query": "q", "n": 5}) == {"n"}
    assert _field_errors(m.generate, {"user_id": "u1", "query": "q", "n": 0}) == {"n"}
    chat = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    assert _field_errors(m.chat, {**chat, "unknown_openai_field": 1}) == {"unknown_openai_field"}
    assert _field_errors(m.chat, {**chat, "messages": [{"role": "user", "content": "hi"}] * 3}) == {"messages"}
    assert _field_errors(m.chat, {**chat, "messages": [{"role": "system", "content": "hi"}]}) == {""}
    assert m.chat.model_validate({**chat, "stream": True}).stream is True
    assert m.chat.model_validate({**chat, "max_tokens": 8}).token_limit() == 8  # below the deployment's: honoured
    assert _field_errors(m.chat, {**chat, "max_tokens": 17}) == {"max_tokens"}
    r = m.chat.model_validate({**chat, "max_completion_tokens": 16, "temperature": 0.2})
    assert r.n == 1 and r.candidates_to_sample() == 2
    parts = {**chat, "messages": [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text",
                                                                                              "text": "b"}]}]}
    assert m.chat.model_validate(parts).query() == "a\nb"


def test_serve_job_refuses_to_start_without_token(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    cfg = tmp_path / "serve.yaml"
    cfg.write_text(yaml.safe_dump({"serving": {"rm_dir": str(tmp_path), "auth": {"token_env": "TTP_TEST_NO_TOKEN"}}}))
    env = {k: v for k, v in os.environ.items() if k != "TTP_TEST_NO_TOKEN"}
    proc = subprocess.run([sys.executable, str(REPO / "jobs" / "serve.py"), "--config", str(cfg), "bounds.max_n=4"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "no API token: set $TTP_TEST_NO_TOKEN" in proc.stderr
    assert "Started a local Ray instance" not in proc.stderr


def test_app_builder_accepts_inline_args_and_config_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ray.serve import Application

    from ttp_ray.serving.app import build_app

    monkeypatch.setenv("TTP_API_TOKEN", TOKEN)
    (app_cfg,) = yaml.safe_load((REPO / "cluster" / "serve_config.yaml").read_text())["applications"]
    assert isinstance(build_app(app_cfg["args"]), Application)
    f = tmp_path / "serve.yaml"
    f.write_text(yaml.safe_dump({"rm_dir": "x"}))
    assert isinstance(build_app({"config": str(f), "overrides": ["bounds.max_n=6"]}), Application)
    with pytest.raises(TTPValidationError, match="only `overrides` may be given"):
        build_app({"config": str(f), "rm_dir": "y"})
    with pytest.raises(TTPValidationError, match="unknown keys"):
        build_app({"rm_dir": "x", "polcy": {}})
