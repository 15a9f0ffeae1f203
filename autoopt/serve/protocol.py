"""The OpenAI request bodies this server accepts, and its errors. Decoding is greedy (what a default workload
measures) unless a request sets `temperature` above 0 (the default is 0, not OpenAI's 1): then its row samples, cut by
`top_p` and by `top_k` (vLLM's extension; 0 or -1 = no limit), repeatably under a `seed`
(`autoopt.engines.sampling`). `stop` (up to 4 strings) ends the text before the first one found and stops its row;
`stream_options.include_usage` adds a last chunk with the usage. `n` (1 to MAX_CHOICES) asks for that many choices,
each a row of its own: a sampled choice i draws what a single request with `seed` + i would (without a seed, each its
own), and greedy ones are alike. Fields that would change the reply and are not implemented (`echo`, `logprobs`,
`top_logprobs`, `best_of`, `suffix`, penalties, `logit_bias`, vLLM's `min_p` and `typical_p`) get a 400, never a reply
that silently lacks them, and so do `top_p` or `top_k` cuts without a temperature. vLLM's `ignore_eos` runs a reply
to `max_tokens` through end-of-text tokens, as autoopt's load test asks (`autoopt.serve.loadtest`). Chat content is
text, or a list of text parts (joined). Errors are JSON `{"error": {"message", "type", "code"}}`.
"""

from __future__ import annotations

from typing import Literal

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr

from autoopt.engines.sampling import MAX_TEMPERATURE, Sampling

DEFAULT_MAX_TOKENS = 16
MAX_STOPS = 4  # OpenAI's limit on `stop` strings
MAX_CHOICES = 8  # `n`: each choice takes a row of its own


class ApiError(Exception):
    def __init__(self, status: int, message: str, code: str, kind: str = "invalid_request_error",
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.kind, self.headers = status, message, code, kind, headers


def error_response(status: int, message: str, code: str, kind: str = "invalid_request_error",
                   headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"error": {"message": message, "type": kind, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    include_usage: StrictBool = False


class Body(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: StrictStr | None = None
    max_tokens: StrictInt | None = Field(default=None, ge=1)
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    priority: StrictInt | StrictStr | None = None
    n: StrictInt = 1
    stop: StrictStr | list[StrictStr] | None = None
    temperature: StrictFloat | StrictInt | None = Field(default=None, ge=0, le=MAX_TEMPERATURE)
    top_p: StrictFloat | StrictInt | None = Field(default=None, gt=0, le=1)
    top_k: StrictInt | None = Field(default=None, ge=-1)
    seed: StrictInt | None = Field(default=None, ge=-(2**63), le=2**63 - 1)
    ignore_eos: StrictBool = False  # vLLM's: run to max_tokens through end-of-text tokens (what load tests send)
    # OpenAI fields that would change the reply and are not implemented: refused, never silently ignored
    echo: StrictBool = False
    logprobs: StrictInt | StrictBool | None = None
    top_logprobs: StrictInt | None = None
    best_of: StrictInt | None = None
    suffix: StrictStr | None = None
    presence_penalty: StrictFloat | StrictInt | None = None
    frequency_penalty: StrictFloat | StrictInt | None = None
    logit_bias: dict[str, StrictFloat | StrictInt] | None = None
    # vLLM's, likewise
    min_p: StrictFloat | StrictInt | None = None
    typical_p: StrictFloat | StrictInt | None = None
    repetition_penalty: StrictFloat | StrictInt | None = None

    def choices(self) -> int:
        if not 1 <= self.n <= MAX_CHOICES:
            raise ApiError(400, f"n={self.n} is out of range; ask for 1 to {MAX_CHOICES} choices", "invalid_n")
        return self.n

    def sampling(self, choice: int = 0) -> Sampling | None:
        """Choice `choice`'s sampling (its seed is `seed` + `choice`), or None where it decodes greedily (temperature
        left out or 0). A cut (top_p < 1, top_k > 1) without a temperature is refused: OpenAI would sample at its
        default temperature 1, this server would decode greedily."""
        if self.temperature is None and ((self.top_p or 1) < 1 or (self.top_k or 0) > 1):
            raise ApiError(400, "top_p and top_k apply only to sampling, and this server decodes greedily unless "
                           "temperature is above 0 (its default is 0, OpenAI's is 1); set temperature",
                           "invalid_request")
        if not self.temperature:
            return None
        top_k = 0 if self.top_k in (None, -1) else self.top_k
        seed = None if self.seed is None else self.seed + choice
        return Sampling(float(self.temperature), 1.0 if self.top_p is None else float(self.top_p), top_k, seed)

    def stops(self) -> list[str]:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if len(stops) > MAX_STOPS or "" in stops:
            raise ApiError(400, f"stop holds {len(stops)} strings{' (one empty)' if '' in stops else ''}; give at "
                           f"most {MAX_STOPS}, none empty", "invalid_stop")
        return stops

    def refuse_unsupported(self) -> None:
        unsupported = {"echo": self.echo, "logprobs": self.logprobs is not None and self.logprobs is not False,
                       "top_logprobs": self.top_logprobs not in (None, 0),
                       "best_of": self.best_of not in (None, 1), "suffix": self.suffix is not None,
                       "presence_penalty": bool(self.presence_penalty),
                       "frequency_penalty": bool(self.frequency_penalty),
                       "logit_bias": any(v != 0 for v in (self.logit_bias or {}).values()),
                       "min_p": bool(self.min_p), "typical_p": self.typical_p not in (None, 1),
                       "repetition_penalty": self.repetition_penalty not in (None, 1)}
        for name, asked in unsupported.items():
            if asked:
                raise ApiError(400, f"{name} is not supported by this server; leave it out", "unsupported_parameter")


class CompletionBody(Body):
    prompt: StrictStr | list[StrictInt] | list[StrictStr]


class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["text"]
    text: StrictStr


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: StrictStr
    content: StrictStr | list[TextPart]  # text, or OpenAI's content parts of type text (joined)

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class ChatBody(Body):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: StrictInt | None = Field(default=None, ge=1)


def chat_prompt(messages: list[ChatMessage]) -> str:
    """The simple chat template: one "role: content" line per message, then "assistant:"."""
    return "".join(f"{m.role}: {m.text()}\n" for m in messages) + "assistant:"
