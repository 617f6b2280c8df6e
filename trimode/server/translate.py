"""From an API request body to an engine :class:`~trimode.engine.Request`: a pure function of the
body, the tokenizer, the model's config and the :class:`ServerConfig` (no HTTP here).

Bad input raises :class:`APIError` (status, message, param, code), which the app turns into an
OpenAI-style error object. What each mode needs comes from :mod:`trimode.decoding.spec`; what the
engine itself checks and reports clearly at submit (an unknown mode, a request larger than the
cache) is left to it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from jinja2.exceptions import TemplateError

from ..config import ModelConfig
from ..decoding.base import GenerationConfig
from ..decoding.spec import spec_for, thresholds
from ..decoding.stop import StopStrings
from ..engine import Request
from ..sampling import SamplingParams
from .limits import MAX_BODY_BYTES
from .schemas import MAX_PROMPTS, ChatRequest, CompletionRequest

PROMPT_FORMS = (f"prompt must be a string, a list of token ids, or a list of at most {MAX_PROMPTS} strings or "
                "of at most as many token-id lists (none empty)")


@dataclass
class ServerConfig:
    model_name: str
    mode: str = "ar"
    block_size: int | None = None  # None: each mode's default block for the device (trimode.decoding.spec)
    device: str = "cpu"
    max_context: int = 8192  # prompt + generated tokens
    max_prompt_tokens: int = 8191
    default_max_tokens: int = 16  # completions (OpenAI's default)
    default_chat_max_tokens: int = 1024
    max_body_bytes: int = MAX_BODY_BYTES
    api_key: str | None = None  # required as "Authorization: Bearer KEY" on /v1 and /metrics when set
    allowed_hosts: tuple[str, ...] | None = None  # Host names answered (None: any); see trimode.server.guard


class APIError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code


class Translation(NamedTuple):
    requests: list[Request]  # one per prompt, in order; their sinks do nothing until the app connects them
    stops: list[str]


def translate(body: CompletionRequest | ChatRequest, tokenizer, model: ModelConfig, config: ServerConfig,
              eos_token_ids: Sequence[int] = ()) -> Translation:
    """The engine requests (prompt ids, generation config, mode; one per prompt of a completions
    batch) and the stop strings of ``body``."""
    check_model(body.model, config)
    chat = isinstance(body, ChatRequest)
    limit = config.max_prompt_tokens
    prompts = [chat_prompt(body, tokenizer, limit)] if chat else completion_prompts(body, tokenizer, limit)
    suffix = None if chat else infill_suffix(body, tokenizer, limit)
    mode = body.mode or ("diffusion" if suffix is not None else config.mode)
    try:
        spec = spec_for(mode, engine=True)
    except ValueError as err:
        raise APIError(400, str(err)) from None
    if spec.needs_mask and model.mask_token_id is None:
        raise APIError(400, f"mode {mode!r} needs a mask token and this model has none (serve it with "
                            "--mask-token, or use mode 'ar' or 'auto')", param="mode")
    try:
        block = spec.block(body.block_size if body.block_size is not None else config.block_size, config.device)
    except ValueError as err:
        raise APIError(400, str(err), param="block_size") from None
    asked = body.max_completion_tokens if chat and body.max_completion_tokens is not None else body.max_tokens
    echo = bool(getattr(body, "echo", False))
    if asked == 0 and not echo:
        raise APIError(400, "max_tokens 0 generates nothing; it is only useful with echo (prompt logprobs)",
                       param="max_tokens")
    logprobs = requested_logprobs(body)
    stops = body.stop_list()
    if stops and tokenizer is None:
        raise APIError(400, "stop strings need a tokenizer; this model has none", param="stop")
    default_max = config.default_chat_max_tokens if chat else config.default_max_tokens
    requests = []
    for i, prompt in enumerate(prompts):
        where = f"prompt[{i}]" if len(prompts) > 1 else "prompt"
        if len(prompt) > config.max_prompt_tokens:
            raise APIError(400, f"{where} has {len(prompt)} tokens; this server accepts at most "
                                f"{config.max_prompt_tokens}", param="prompt", code="context_length_exceeded")
        # Engine.submit refuses this too (and a mode without its mask token); checked here as well
        # so that the API error names the parameter at fault.
        bad = [t for t in prompt if t >= model.vocab_size]
        if bad:
            raise APIError(400, f"{where} token ids must be < {model.vocab_size} (the vocabulary), got {bad[:5]}",
                           param="prompt")
        room = config.max_context - len(prompt)
        if asked is not None and asked > room:
            raise APIError(400, f"max_tokens {asked} + {where} {len(prompt)} tokens exceeds the context of "
                                f"{config.max_context} tokens", param="max_tokens", code="context_length_exceeded")
        gen = GenerationConfig(
            max_new_tokens=max(asked, 1) if asked is not None else max(1, min(default_max, room)),
            sampling=SamplingParams(temperature=body.temperature, top_p=body.top_p, seed=body.seed),
            eos_token_ids=tuple(eos_token_ids),
            stop=StopStrings(tokenizer, stops) if stops else None,
            block_size=block,
            **(thresholds(body.threshold) if body.threshold is not None else thresholds()),
        )
        requests.append(Request(prompt, gen, mode, sink=lambda e: None, logprobs=logprobs, echo=echo,
                                generate=asked != 0, suffix=suffix))
    return Translation(requests, stops)


def infill_suffix(body: CompletionRequest, tokenizer, max_tokens: int | None) -> list[int] | None:
    """The suffix's ids when the body asks to fill in the middle (None when it has no suffix); the
    options that cannot go with it are refused by name."""
    if body.suffix is None:
        return None
    if body.mode not in (None, "diffusion"):
        raise APIError(400, f"suffix fills in the middle by diffusion; mode must be 'diffusion' or unset, got "
                            f"{body.mode!r}", param="mode")
    for name, asked in (("logprobs", body.logprobs is not None), ("echo", body.echo), ("stop", bool(body.stop_list())),
                        ("max_tokens", body.max_tokens == 0)):
        if asked:
            raise APIError(400, f"{name} cannot be used with suffix (fill in the middle)", param=name)
    if tokenizer is None:
        raise APIError(400, "this model has no tokenizer: suffix needs one", param="suffix")
    if too_long(len(body.suffix), tokenizer, max_tokens):
        raise APIError(400, f"suffix has {len(body.suffix)} characters, more than {max_tokens} tokens can hold",
                       param="suffix", code="context_length_exceeded")
    return tokenizer.encode(body.suffix, add_special_tokens=False)


def requested_logprobs(body: CompletionRequest | ChatRequest) -> int | None:
    """Alternatives to score per token, or None when the body asks for no logprobs."""
    if isinstance(body, ChatRequest):
        if body.top_logprobs is not None and not body.logprobs:
            raise APIError(400, "top_logprobs needs logprobs: true", param="top_logprobs")
        return (body.top_logprobs or 0) if body.logprobs else None
    return body.logprobs


def check_model(name: str, config: ServerConfig) -> None:
    if name != config.model_name:
        raise APIError(404, f"model {name!r} does not exist; this server serves {config.model_name!r}",
                       param="model", code="model_not_found")


def too_long(text_chars: int, tokenizer, max_tokens: int | None) -> bool:
    """Whether a text of ``text_chars`` characters certainly has more than ``max_tokens`` tokens,
    known without tokenizing it (a token stands for at most ``tokenizer.max_token_chars``)."""
    return max_tokens is not None and text_chars > max_tokens * tokenizer.max_token_chars


def completion_prompts(body: CompletionRequest, tokenizer, max_tokens: int | None = None) -> list[list[int]]:
    """The prompts of a completions body: a string, a list of strings, a list of token ids, or a
    list of lists of token ids (several prompts: one choice each). A text that must have more than
    ``max_tokens`` tokens is refused before it is tokenized."""
    given = body.prompt
    if isinstance(given, str) or (given and isinstance(given[0], int)):
        given = [given]
    prompts = []
    for i, item in enumerate(given):
        where = f"prompt[{i}]" if len(given) > 1 else "prompt"
        if isinstance(item, str):
            if tokenizer is None:
                raise APIError(400, "this model has no tokenizer: send the prompt as token ids", param="prompt")
            if too_long(len(item), tokenizer, max_tokens):
                raise APIError(400, f"{where} has {len(item)} characters, more than {max_tokens} tokens can hold; "
                                    f"this server accepts at most {max_tokens} tokens", param="prompt",
                               code="context_length_exceeded")
            item = tokenizer.encode(item)
        if not item:
            raise APIError(400, f"{where} is empty after tokenization", param="prompt")
        prompts.append(list(item))
    return prompts


def chat_prompt(body: ChatRequest, tokenizer, max_tokens: int | None = None) -> list[int]:
    if tokenizer is None or not tokenizer.chat_template:
        raise APIError(400, "this model has no chat template; use /v1/completions", param="messages")
    chars = sum(len(m.text()) for m in body.messages)
    if too_long(chars, tokenizer, max_tokens):
        raise APIError(400, f"messages have {chars} characters, more than {max_tokens} tokens can hold; this "
                            f"server accepts at most {max_tokens} prompt tokens", param="messages",
                       code="context_length_exceeded")
    try:
        return tokenizer.encode_chat([{"role": m.role, "content": m.text()} for m in body.messages])
    except (TemplateError, ValueError, TypeError) as err:
        raise APIError(400, f"the chat template refused these messages: {err}", param="messages") from None


def validation_error(errors: Sequence[dict[str, Any]]) -> APIError:
    """A 400 for a body that failed the schema (pydantic's errors), naming the first bad field."""
    parts, param = [], None
    unicode = [e for e in errors if "lone surrogate" in str(e.get("msg"))]
    if unicode:  # whatever form it took, the text itself is at fault
        loc = [str(x) for x in unicode[0].get("loc", ()) if x != "body" and "[" not in str(x)]  # no union tags
        message = str(unicode[0]["msg"]).removeprefix("Value error, ")
        return APIError(400, f"{'.'.join(loc) or 'body'}: {message}", param=loc[0] if loc else None)
    prompt = [e for e in errors if tuple(e.get("loc", ()))[1:2] == ("prompt",)]
    if prompt and len(prompt) > 1:  # one error per form the union allows: say what the forms are
        sizes = sorted({e.get("msg") for e in prompt if e.get("type") in ("too_long", "too_short")})
        return APIError(400, "; ".join([PROMPT_FORMS, *sizes]), param="prompt")
    for err in errors:
        loc = [str(x) for x in err.get("loc", ()) if x != "body"]
        if err.get("type") == "json_invalid":
            return APIError(400, f"request body is not valid JSON: {err.get('msg')}", code="invalid_json")
        param = param or (loc[0] if loc else None)
        parts.append(f"{'.'.join(loc) or 'body'}: {err.get('msg')}")
    return APIError(400, "; ".join(parts[:5]) or "invalid request", param=param)
