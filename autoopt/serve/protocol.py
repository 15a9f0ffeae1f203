"""The OpenAI request bodies this server accepts, and its errors. Greedy decoding only: sampling fields such as
`temperature` are accepted and ignored; `stop` (up to 4 strings) ends the text before the first one found and
stops its row; `stream_options.include_usage` adds a last chunk with the usage. Fields that would change the
reply and are not implemented (`echo`, `logprobs`, `top_logprobs`, `best_of`, `suffix`) get a 400, never a
reply that silently lacks them. Chat content is text, or a list of text parts (joined). Errors are JSON
`{"error": {"message", "type", "code"}}`.
"""

from __future__ import annotations

from typing import Literal

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

DEFAULT_MAX_TOKENS = 16
MAX_STOPS = 4  # OpenAI's limit on `stop` strings


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
    # OpenAI fields that would change the reply and are not implemented: refused, never silently ignored
    echo: StrictBool = False
    logprobs: StrictInt | StrictBool | None = None
    top_logprobs: StrictInt | None = None
    best_of: StrictInt | None = None
    suffix: StrictStr | None = None

    def stops(self) -> list[str]:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if len(stops) > MAX_STOPS or "" in stops:
            raise ApiError(400, f"stop holds {len(stops)} strings{' (one empty)' if '' in stops else ''}; give at "
                           f"most {MAX_STOPS}, none empty", "invalid_stop")
        return stops

    def refuse_unsupported(self) -> None:
        unsupported = {"echo": self.echo, "logprobs": self.logprobs is not None and self.logprobs is not False,
                       "top_logprobs": self.top_logprobs not in (None, 0),
                       "best_of": self.best_of not in (None, 1), "suffix": self.suffix is not None}
        for name, asked in unsupported.items():
            if asked:
                raise ApiError(400, f"{name} is not supported by this server (greedy text only); leave it out",
                               "unsupported_parameter")


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
