"""Request bodies of the OpenAI-compatible endpoints (pydantic: the OpenAPI schema comes from here).

Unknown fields are refused (a misspelt parameter should not be silently ignored); fields of the
OpenAI API that this server cannot honour are accepted only at their neutral value. The extra
fields ``mode``, ``block_size`` and ``threshold`` choose the decoding per request.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    field_validator,
)

from ..decoding.spec import ENGINE_MODES

MODE_FIELD = Literal[ENGINE_MODES]  # the OpenAPI enum of "mode"


def _unicode(text: str) -> str:
    # JSON may spell a lone surrogate ("\ud800"), which is no character: the tokenizer cannot
    # encode it, and neither can a reply that quotes it.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise ValueError(f"text must be valid Unicode; a lone surrogate is at position {err.start}") from None
    return text


Unicode = Annotated[str, AfterValidator(_unicode)]
Stop = Annotated[Unicode, Field(min_length=1, max_length=256)]
# OpenAI takes 4; evaluation harnesses send a task's stop sequences plus the EOS text, often more.
MAX_STOPS = 16


class _Common(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: Unicode = Field(min_length=1, description="a model id from GET /v1/models")
    max_tokens: int | None = Field(default=None, ge=0, description="tokens to generate (EOS counted); default 16 / chat: up to the context; 0 only with echo")
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    seed: int | None = Field(default=None, ge=0, le=2**63 - 1)
    stop: Stop | list[Stop] | None = Field(default=None, description=f"up to {MAX_STOPS} stop strings (not returned)")
    stream: bool = False
    stream_options: dict[str, bool] | None = None
    n: int = Field(default=1, ge=1, le=1, description="only 1 is supported")
    user: Unicode | None = None
    presence_penalty: float = Field(default=0.0, ge=0.0, le=0.0, description="only 0 is supported")
    frequency_penalty: float = Field(default=0.0, ge=0.0, le=0.0, description="only 0 is supported")
    # trimode extras
    mode: MODE_FIELD | None = Field(default=None, description="decoding mode; default: the server's --mode")
    block_size: int | None = Field(default=None, ge=1, le=256, description="diffusion/speculation block size")
    threshold: float | None = Field(
        default=None, ge=0.0, le=1.0,
        description="diffusion: commit confidence (default 0.9); linear-spec: drafting threshold (default 0)",
    )

    @field_validator("stop")
    @classmethod
    def _at_most_four(cls, v):
        if isinstance(v, list) and len(v) > MAX_STOPS:
            raise ValueError(f"at most {MAX_STOPS} stop strings, got {len(v)}")
        return v

    def stop_list(self) -> list[str]:
        return [] if self.stop is None else [self.stop] if isinstance(self.stop, str) else list(self.stop)


MAX_PROMPTS = 64  # prompts in one completions request (each is a row of the engine's batch)
# Strict: JSON true and false are not token ids 1 and 0, nor is 5.0 an id.
TokenIds = Annotated[list[Annotated[StrictInt, Field(ge=0)]], Field(min_length=1)]
Text = Annotated[Unicode, Field(min_length=1)]
MAX_LOGPROBS = 20


class CompletionRequest(_Common):
    prompt: Text | TokenIds | Annotated[list[Unicode], Field(min_length=1, max_length=MAX_PROMPTS)] | Annotated[
        list[TokenIds], Field(min_length=1, max_length=MAX_PROMPTS)] = Field(
        description=f"text, token ids, or a batch of up to {MAX_PROMPTS} of either (one choice per prompt, "
                    "each with its index)")
    echo: bool = Field(default=False, description="return the prompt before the completion (and its logprobs)")
    logprobs: int | None = Field(default=None, ge=0, le=MAX_LOGPROBS,
                                 description="log-probabilities of each token and of the k most likely (the "
                                             "verifier's, i.e. the causal model's, in every mode)")
    suffix: Unicode | None = Field(
        default=None, description="fill in the middle: the text after the completion. The completion is then exactly "
                                  "max_tokens tokens (default 16), denoised between prompt and suffix by diffusion "
                                  "(mode diffusion or unset; no logprobs, echo or stop)")


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["text"]
    text: Unicode


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "user", "assistant", "developer"]
    content: Unicode | list[ContentPart]
    name: Unicode | None = None

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class ChatRequest(_Common):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool | None = Field(default=None, description="log-probabilities of the reply's tokens (the verifier's)")
    top_logprobs: int | None = Field(default=None, ge=0, le=MAX_LOGPROBS)
