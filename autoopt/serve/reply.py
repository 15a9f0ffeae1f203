"""The bridge from the worker thread to one request: the reply's token channel, and its text as the tokens arrive
(with the stop strings)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from tokenizers import Tokenizer


class Reply:
    """One request's token channel. `token`/`started`/`finished` run on the worker thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop, special: frozenset[int], arrival: float) -> None:
        self._loop, self._special = loop, special
        self.queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self.cancelled = False
        self.finish_reason = "length"
        self.arrival = arrival
        self.start: float | None = None
        self.first: float | None = None
        self.last: float | None = None
        self.largest_gap: float | None = None  # the longest wait between two of its tokens (None: fewer than two)
        self.stopped_at: float | None = None  # when the token that completed a stop string was generated
        self.done = False

    def _post(self, item: tuple[str, Any]) -> None:
        with contextlib.suppress(RuntimeError):  # the event loop is gone: nobody is listening
            self._loop.call_soon_threadsafe(self.queue.put_nowait, item)

    def started(self, t: float) -> None:
        self.start = t

    def token(self, index: int, token: int, t: float) -> bool:
        if self.cancelled:
            return False
        if index == 0:
            self.first = t
        elif self.last is not None:
            self.largest_gap = max(self.largest_gap or 0.0, t - self.last)
        self.last = t  # an end-of-text token ends the reply when it is generated: its time counts too
        if token in self._special:
            self.finish_reason = "stop"
            return False
        self._post(("token", (token, t)))
        return True

    def finished(self, error: BaseException | None) -> None:
        self._post(("end", error))


class Text:
    """A reply's text as its tokens arrive. `push` returns the new text that is safe to send: it holds back an
    incomplete UTF-8 tail, and a tail that could still grow into one of `stops`. At the first stop string the text
    ends before it and `stopped` is set: the caller stops generating."""

    def __init__(self, tokenizer: Tokenizer, stops: list[str]) -> None:
        self._tokenizer, self._stops = tokenizer, stops
        self.ids: list[int] = []
        self.stopped = False
        self._text, self._sent = "", 0

    def push(self, token: int) -> str:
        self.ids.append(token)
        self._text = self._tokenizer.decode(self.ids)
        complete = self._text.rstrip("\ufffd")  # the last character's bytes may still be arriving
        found = [i for i in (complete.find(stop) for stop in self._stops) if i >= 0]
        if found:
            self.stopped, self._text = True, complete[: min(found)]
            return self.flush()
        return self._emit(len(complete) - self._partial_stop(complete))

    def flush(self) -> str:
        """Everything not yet sent (the reply is over: an incomplete last character stays as U+FFFD)."""
        return self._emit(len(self._text))

    def text(self) -> str:
        return self._text

    def _emit(self, upto: int) -> str:
        delta = self._text[self._sent : upto]
        self._sent = max(self._sent, upto)
        return delta

    def _partial_stop(self, text: str) -> int:
        """The longest tail of `text` that is a stop string's beginning."""
        return max((k for stop in self._stops for k in range(1, len(stop)) if text.endswith(stop[:k])), default=0)
