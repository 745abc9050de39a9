"""Judge configuration: which endpoint and model, decoding, retries, concurrency; the API key from the environment.

Layers, later ones winning: the benchmark variant's defaults (its protocol's judge), the environment
(``UNILIP_JUDGE_BASE_URL``, ``UNILIP_JUDGE_MODEL``), a config file (``judge_config=PATH``: YAML/JSON, or a
dict from Python), then single ``judge_*`` options.

The API key is never part of a config: it is read from an environment variable (``api_key_env``, else
``UNILIP_JUDGE_API_KEY``, else ``OPENAI_API_KEY``) when the client starts, so it cannot reach a run
directory, a spec, a cache entry or a log through the options (``unilip eval run`` records its options).
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ENV_BASE_URL = "UNILIP_JUDGE_BASE_URL"
ENV_MODEL = "UNILIP_JUDGE_MODEL"
ENV_API_KEY = "UNILIP_JUDGE_API_KEY"
ENV_API_KEY_FALLBACK = "OPENAI_API_KEY"
DEFAULT_BASE_URL = "https://api.openai.com/v1"
AUTH_STYLES = ("bearer", "api-key", "none")
# Shorter keys are refused: every occurrence in judge text is masked, and a very short string occurs by chance.
MIN_KEY_LENGTH = 8

# Option name (as ``--opt NAME=VALUE``) -> config field. Benchmarks that call a judge declare these.
OPTION_FIELDS = {
    "judge_model": "model",
    "judge_version": "version",
    "judge_base_url": "base_url",
    "judge_api_key_env": "api_key_env",
    "judge_temperature": "temperature",
    "judge_max_tokens": "max_tokens",
    "judge_seed": "seed",
    "judge_concurrency": "concurrency",
    "judge_rpm": "requests_per_minute",
    "judge_timeout_s": "timeout_s",
    "judge_max_retries": "max_retries",
}


class JudgeConfigError(ValueError):
    """A judge configuration value is missing or invalid."""


@dataclass(frozen=True)
class JudgeConfig:
    """Everything the judge client needs except the key (see the module docstring).

    Attributes:
        model: the model name sent to the endpoint.
        version: what identifies the judge's weights (a dated snapshot, a local checkpoint digest);
            part of the cache key and the spec. Defaults to ``model``.
        base_url: the OpenAI-compatible API root, ending before ``/chat/completions``.
        api_key_env: the environment variable holding the key (default: ``UNILIP_JUDGE_API_KEY``, then
            ``OPENAI_API_KEY``).
        auth: ``bearer`` (OpenAI, vLLM, SGLang), ``api-key`` (Azure's header) or ``none``.
        api_version: appended as ``?api-version=`` (Azure deployments).
        temperature, max_tokens, seed: decoding parameters (None: not sent, the endpoint's default).
        extra_body: more request fields (``top_p``, ``max_completion_tokens``, vLLM's
            ``chat_template_kwargs`` ...); decoding-relevant, so part of the cache key.
        timeout_s: per-request timeout.
        max_retries: retries after a timeout, a connection error, HTTP 408/429/5xx or a malformed body.
        backoff_base_s, backoff_max_s: exponential backoff with jitter, capped.
        retry_after_max_s: cap on a server's ``Retry-After``.
        concurrency: requests in flight at most.
        requests_per_minute: start at most this many requests per minute (None: no limit).
    """

    model: str
    version: str | None = None
    base_url: str = DEFAULT_BASE_URL
    api_key_env: str | None = None
    auth: str = "bearer"
    api_version: str | None = None
    temperature: float | None = 0.0
    max_tokens: int | None = None
    seed: int | None = None
    extra_body: dict[str, Any] = field(default_factory=dict)
    timeout_s: float = 120.0
    max_retries: int = 5
    backoff_base_s: float = 1.0
    backoff_max_s: float = 60.0
    retry_after_max_s: float = 300.0
    concurrency: int = 8
    requests_per_minute: float | None = None

    def __post_init__(self) -> None:
        if not self.model:
            raise JudgeConfigError("the judge needs a model name (judge_model, or $UNILIP_JUDGE_MODEL)")
        if self.auth not in AUTH_STYLES:
            raise JudgeConfigError(f"judge auth {self.auth!r}: choose one of {', '.join(AUTH_STYLES)}")
        scheme = urlsplit(self.base_url).scheme
        if scheme not in ("http", "https"):
            raise JudgeConfigError(f"judge base_url must be an http(s) URL, got {self.base_url!r}")
        if self.concurrency < 1 or self.max_retries < 0 or self.timeout_s <= 0:
            raise JudgeConfigError("judge concurrency must be >= 1, max_retries >= 0 and timeout_s > 0")
        if self.requests_per_minute is not None and self.requests_per_minute <= 0:
            raise JudgeConfigError("judge requests_per_minute must be positive (or unset for no limit)")
        if self.backoff_base_s < 0 or self.backoff_max_s < 0 or self.retry_after_max_s < 0:
            raise JudgeConfigError("judge backoff and Retry-After caps must not be negative")

    @property
    def identity(self) -> str:
        """The judge's identity for caches and specs: ``version`` when given, else the model name."""
        return self.version or self.model

    def decoding(self) -> dict[str, Any]:
        """The decoding fields sent with every request (unset ones left out)."""
        sent = {"temperature": self.temperature, "max_tokens": self.max_tokens, "seed": self.seed}
        return {**{k: v for k, v in sent.items() if v is not None}, **self.extra_body}

    def fingerprint_fields(self) -> dict[str, Any]:
        """What moves scores (judge identity and decoding); endpoint and throughput settings do not."""
        return {"model": self.model, "version": self.identity, "decoding": self.decoding()}

    def describe(self) -> dict[str, Any]:
        """A record of the configuration for results: no key, and the endpoint without path or credentials."""
        described = {k: v for k, v in asdict(self).items() if k not in ("base_url", "api_version")}
        return {**described, "endpoint": endpoint_label(self.base_url)}

    @property
    def is_loopback(self) -> bool:
        """The endpoint is on this machine (localhost or a loopback address): no key is required."""
        host = urlsplit(self.base_url).hostname or ""
        if host == "localhost":
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False


def endpoint_label(base_url: str) -> str:
    """``scheme://host[:port]`` of a URL: enough to tell endpoints apart, with no credentials or query."""
    parts = urlsplit(base_url)
    host = parts.hostname or ""
    return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")


def api_key_source(config: JudgeConfig, env: Mapping[str, str] | None = None) -> tuple[str, str] | None:
    """``(variable name, key)`` for ``config`` from the environment, or None (auth ``none``, or nothing set).

    Surrounding whitespace is dropped (a key read with ``$(cat file)`` keeps no trailing newline).
    """
    env = os.environ if env is None else env
    if config.auth == "none":
        return None
    names = [config.api_key_env] if config.api_key_env else [ENV_API_KEY, ENV_API_KEY_FALLBACK]
    for name in names:
        value = env.get(name, "").strip()
        if value:
            return name, value
    return None


def api_key_from_env(config: JudgeConfig, env: Mapping[str, str] | None = None) -> str | None:
    """The key for ``config`` from the environment, or None (auth ``none``, or nothing set)."""
    found = api_key_source(config, env)
    return found[1] if found else None


def check_api_key(key: str, source: str) -> None:
    """Refuse a key that cannot travel in an HTTP header, or that is too short to be masked in text.

    The message names ``source`` (the environment variable) and never the key, nor any of its
    characters: http.client would otherwise raise an error quoting the whole header value.

    Raises:
        JudgeConfigError: a control character (a line break from a pasted file, a tab ...), a character
            outside Latin-1 (headers are Latin-1 on the wire), or fewer than :data:`MIN_KEY_LENGTH`
            characters (masking so short a string in answers would garble them).
    """
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in key):
        raise JudgeConfigError(
            f"the judge API key in {source} contains a line break or another control character, "
            f"which an HTTP header cannot carry: set {source} to the key alone, on one line"
        )
    if any(ord(char) > 0xFF for char in key):
        raise JudgeConfigError(
            f"the judge API key in {source} contains a character outside Latin-1 (a typographic "
            f"dash or quote from a copied document?), which an HTTP header cannot carry: set "
            f"{source} to the key as issued"
        )
    if len(key) < MIN_KEY_LENGTH:
        raise JudgeConfigError(
            f"the judge API key in {source} has fewer than {MIN_KEY_LENGTH} characters: too short "
            "to mask in judge answers without garbling them; use a longer key (or judge auth "
            "'none' for an endpoint without authentication)"
        )


def _none_like(value: Any) -> bool:
    # ``--opt judge_temperature=null`` arrives as the string "null" (the CLI keeps YAML nulls as text).
    return value is None or (isinstance(value, str) and value.strip().lower() in ("", "null", "none", "~"))


_NUMERIC = {
    "temperature": float,
    "max_tokens": int,
    "seed": int,
    "timeout_s": float,
    "max_retries": int,
    "backoff_base_s": float,
    "backoff_max_s": float,
    "retry_after_max_s": float,
    "concurrency": int,
    "requests_per_minute": float,
}
_NULLABLE = {"version", "api_key_env", "api_version", "temperature", "max_tokens", "seed", "requests_per_minute"}


def _coerce(name: str, value: Any) -> Any:
    if name in _NULLABLE and _none_like(value):
        return None
    if name in _NUMERIC:
        try:
            converted = _NUMERIC[name](value)
        except (TypeError, ValueError):
            raise JudgeConfigError(f"judge {name} must be a number, got {value!r}") from None
        if _NUMERIC[name] is int and isinstance(value, float) and value != int(value):
            raise JudgeConfigError(f"judge {name} must be a whole number, got {value!r}")
        return converted
    if name == "extra_body":
        if not isinstance(value, Mapping):
            raise JudgeConfigError(f"judge extra_body must be a mapping, got {type(value).__name__}")
        return dict(value)
    return str(value)


def read_config_file(source: str | Path | Mapping[str, Any]) -> dict[str, Any]:
    """A judge config from a YAML/JSON file, an inline YAML mapping (``{model: x}``) or a dict."""
    import yaml

    if isinstance(source, Mapping):
        data: Any = dict(source)
    else:
        text = str(source)
        path = Path(text).expanduser()
        if path.is_file():
            data = yaml.safe_load(path.read_text())
        elif text.lstrip().startswith("{"):
            data = yaml.safe_load(text)
        else:
            raise JudgeConfigError(f"judge_config {text!r}: no such file")
    if not isinstance(data, Mapping):
        raise JudgeConfigError("a judge config must be a mapping of settings")
    if "api_key" in data:
        raise JudgeConfigError(
            "a judge config must not hold the API key: put it in an environment variable "
            f"(${ENV_API_KEY}, or name one with api_key_env)"
        )
    known = {f.name for f in fields(JudgeConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise JudgeConfigError(f"unknown judge config keys {unknown}; known: {sorted(known)}")
    return {name: _coerce(name, value) for name, value in data.items()}


def resolve_judge_config(
    options: Mapping[str, Any], defaults: Mapping[str, Any], env: Mapping[str, str] | None = None
) -> JudgeConfig:
    """Layer variant defaults, environment, ``judge_config`` and ``judge_*`` options into a config.

    Args:
        options: benchmark options (only ``judge_config`` and the names in :data:`OPTION_FIELDS` are read).
        defaults: the benchmark variant's judge (its protocol's model and decoding).
        env: the environment (default ``os.environ``).
    """
    env = os.environ if env is None else env
    layered: dict[str, Any] = {name: _coerce(name, value) for name, value in defaults.items()}
    if env.get(ENV_BASE_URL, "").strip():
        layered["base_url"] = env[ENV_BASE_URL].strip()
    if env.get(ENV_MODEL, "").strip():
        layered["model"] = env[ENV_MODEL].strip()
    if options.get("judge_config") is not None:
        layered.update(read_config_file(options["judge_config"]))
    for option, name in OPTION_FIELDS.items():
        if option in options and options[option] is not None:
            layered[name] = _coerce(name, options[option])
    if "model" not in layered:
        raise JudgeConfigError("the judge needs a model name (judge_model, or $UNILIP_JUDGE_MODEL)")
    return JudgeConfig(**layered)


def with_overrides(config: JudgeConfig, **changes: Any) -> JudgeConfig:
    """A copy of ``config`` with some fields changed (validated again)."""
    return replace(config, **{name: _coerce(name, value) for name, value in changes.items()})
