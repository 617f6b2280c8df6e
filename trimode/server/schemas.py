"""Request bodies of the OpenAI-compatible endpoints (pydantic: the OpenAPI schema comes from here).

Unknown fields are refused (a misspelt parameter should not be silently ignored); fields of the
OpenAI API that this server cannot honour are accepted only at their neutral value. The extra
fields ``mode``, ``block_size`` and ``threshold`` choose the decoding per request.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..decoding.spec import ENGINE_MODES

MODE_FIELD = Literal[ENGINE_MODES]  # the OpenAPI enum of "mode"
Stop = Annotated[str, Field(min_length=1, max_length=256)]


class _Common(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, description="a model id from GET /v1/models")
    max_tokens: int | None = Field(default=None, ge=1, description="tokens to generate (EOS counted); default 16 / chat: up to the context")
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    seed: int | None = Field(default=None, ge=0, le=2**63 - 1)
    stop: Stop | list[Stop] | None = Field(default=None, description="up to 4 stop strings (not returned)")
    stream: bool = False
    stream_options: dict[str, bool] | None = None
    n: int = Field(default=1, ge=1, le=1, description="only 1 is supported")
    user: str | None = None
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
        if isinstance(v, list) and len(v) > 4:
            raise ValueError(f"at most 4 stop strings, got {len(v)}")
        return v

    def stop_list(self) -> list[str]:
        return [] if self.stop is None else [self.stop] if isinstance(self.stop, str) else list(self.stop)


class CompletionRequest(_Common):
    prompt: Annotated[str, Field(min_length=1)] | Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)] | Annotated[list[str], Field(min_length=1, max_length=1)] = Field(
        description="text, or token ids (a batch of several prompts is not supported: send one request each)"
    )
    echo: Literal[False] = Field(default=False, description="only false is supported")
    logprobs: None = None
    suffix: None = None


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["text"]
    text: str


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "user", "assistant", "developer"]
    content: str | list[ContentPart]
    name: str | None = None

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class ChatRequest(_Common):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: Literal[False] | None = Field(default=None, description="only false is supported")
