"""Priority queues per class and the dynamic batcher's release rule. Pure logic: every call takes the
current time `now` (seconds on any monotonic clock), so tests drive it with a fake clock.

Contract, in the order `next_batch` applies it:
1. Starvation bound: a request that has waited at least `starvation_s` leads the next batch, whatever
   its class (the oldest such request first) - but at most one batch in every `starvation_every`, so
   that under overload, when old requests never run out, the policy still picks the other batches
   (with the default 4, the urgent classes keep at least 3/4 of the engine).
2. Otherwise the policy picks the lead class among those with waiting requests: `strict` takes the most
   urgent (lowest priority number); `weighted` is smooth weighted round-robin over class weights.
   The lead request is its class's oldest.
3. The batch holds the lead and other waiting requests of the lead's prompt length, up to `max_batch`;
   with `mix_lengths`, shorter prompts may take rows too, padded to the lead's length, if their new
   tokens fit `max_length` after it. A batch's prefill runs at its longest prompt, so a joining row never
   makes it longer than the lead's own; like any row, one that asks for more tokens than the others
   lengthens the batch's decoding. `strict` fills the rows most urgent class first; `weighted` gives each
   row in turn, by the same round-robin, to one of the classes with a request that may take it, so that
   under overload each class's share of the rows served follows the weights, however many rows a batch
   has. Either way a class gives its requests of the lead's length first, oldest first.
   With `continuous` (rows join a running batch between decode steps, `autoopt.serving.batcher`), any prompt
   length joins, the caller passes the rows its running batch has free (`room`) in place of `max_batch`, and
   a join is due at once: each joiner is prefilled alone, so waiting for others would gain nothing.
4. It is released when full, or once its oldest request has waited `max_queue_delay_s`; until then
   `next_batch` returns None and `next_release` says when to look again.
Waiting time always counts from a request's `arrival` (its scheduled send time), so a backlog is never
hidden by a late admission.

Not thread-safe: one owner calls it (the open-loop runner's thread, or the server's worker under a lock).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from autoopt.config.serving import POLICIES, ServingClassConfig
from autoopt.engines.sampling import Sampling

QUEUED, DELAYED, REJECTED = "queued", "delayed", "rejected"


@dataclass(eq=False)
class ServingRequest:
    """One request as the scheduler sees it. `prompt_ids` (int64, shape (prompt_len,)) and `sampling` are only read
    by the batcher; the scheduler needs the lengths and the arrival time."""

    id: int
    cls: str  # class name
    prompt_len: int
    max_new_tokens: int
    arrival: float  # scheduled send time, on the scheduler's clock
    prompt_ids: Any = field(default=None, repr=False)
    sampling: Sampling | None = None  # None or greedy: the argmax


@dataclass
class _Plan:
    batch: list[ServingRequest]  # its lead first
    due: float  # when it is released if nothing changes
    by_starvation: bool  # its lead was chosen by the starvation bound
    credits: dict[str, float]  # the classes' round-robin credits once it is released


@dataclass
class _ClassQueue:
    config: ServingClassConfig
    waiting: deque[ServingRequest] = field(default_factory=deque)
    held: deque[ServingRequest] = field(default_factory=deque)  # on_full=delay: over the limit, not yet queued
    credit: float = 0.0  # weighted round-robin state
    rejected: int = 0


class Scheduler:
    """Per-class FIFO queues with limits, a lead-selection policy, a starvation bound and batch release."""

    def __init__(
        self,
        classes: list[ServingClassConfig],
        *,
        policy: str = "strict",
        max_batch: int = 1,
        max_queue_delay_s: float = 0.0,
        starvation_s: float = float("inf"),
        starvation_every: int = 4,
        max_waiting: int | None = None,
        mix_lengths: bool = False,
        max_length: int | None = None,
        continuous: bool = False,
    ) -> None:
        if policy not in POLICIES:
            raise ValueError(f"policy={policy!r} is not known; choose one of: {', '.join(POLICIES)}")
        if starvation_every < 1:
            raise ValueError(f"starvation_every={starvation_every} must be at least 1")
        if max_batch < 1:
            raise ValueError(f"max_batch={max_batch} must be at least 1")
        ordered = sorted(classes, key=lambda c: c.priority)
        self._queues = {c.name: _ClassQueue(c) for c in ordered}
        self.policy = policy
        self.max_batch = max_batch
        self.max_queue_delay_s = max_queue_delay_s
        self.starvation_s = starvation_s
        self.starvation_every = starvation_every
        self._since_starving = starvation_every  # batches released since the last starvation-led one
        self.max_waiting = max_waiting  # a "delay" class holds a request back only while fewer wait in all
        self.mix_lengths = mix_lengths
        self.max_length = max_length  # a batch's width + its rows' new tokens; None: unbounded
        self.continuous = continuous

    def urgency(self, request: ServingRequest, now: float) -> int:
        """Which of the admitted requests a continuous batch prefills first (lowest first, then in join order): under
        `strict`, the most urgent class's, but one that has waited `starvation_s` since its arrival before any (the
        starvation bound, kept for a prompt waiting for its parts too); under `weighted`, in the order admitted (the
        weights chose it)."""
        if self.policy != "strict":
            return 0
        return -1 if request.arrival + self.starvation_s <= now else self._queues[request.cls].config.priority

    # -- admission -------------------------------------------------------------------------------
    def submit(self, request: ServingRequest) -> str:
        """Admit `request`: QUEUED, DELAYED (held until its class has room) or REJECTED (class full, and for a
        "delay" class `max_waiting` requests already waiting in all)."""
        queue = self._queue(request.cls)
        if len(queue.waiting) < queue.config.queue_limit:
            queue.waiting.append(request)
            return QUEUED
        if queue.config.on_full == "delay" and (self.max_waiting is None or len(self) < self.max_waiting):
            queue.held.append(request)
            return DELAYED
        queue.rejected += 1
        return REJECTED

    def cancel(self, request_id: int) -> bool:
        """Drop a waiting or held request (its client went away). True if it was found."""
        for queue in self._queues.values():
            for pending in (queue.waiting, queue.held):
                for request in pending:
                    if request.id == request_id:
                        pending.remove(request)
                        self._promote(queue)
                        return True
        return False

    # -- batching --------------------------------------------------------------------------------
    def next_batch(self, now: float, room: int | None = None) -> list[ServingRequest] | None:
        """The batch to run now, removed from the queues, or None if none is due yet (see module doc). `room`: the
        rows a running batch has free (continuous batching); None: `max_batch`."""
        plan = self._plan(now, room)
        if plan is None or plan.due > now:
            return None
        self._since_starving = 0 if plan.by_starvation else self._since_starving + 1
        for name, credit in plan.credits.items():
            self._queues[name].credit = credit
        for request in plan.batch:
            self._queues[request.cls].waiting.remove(request)
        for queue in self._queues.values():
            self._promote(queue)
        return plan.batch

    def next_release(self, now: float, room: int | None = None) -> float | None:
        """When `next_batch(now, room)` may next return a batch if nothing new arrives: `now` if one is due,
        None when nothing waits or `room` is 0 (no row can take one until a row leaves)."""
        plan = self._plan(now, room)
        if plan is None:
            return None
        due = plan.due
        if self._starvation_allowed():
            due = min(due, min(r.arrival for r in self._all_waiting()) + self.starvation_s)
        return max(now, due)

    def _plan(self, now: float, room: int | None) -> _Plan | None:
        """The batch `next_batch` would release, due at once when full or when its lead starves."""
        size = self.max_batch if room is None else min(room, self.max_batch)
        if size < 1 or not self._all_waiting():
            return None
        credits = {name: q.credit for name, q in self._queues.items()}
        starving = self._starving_lead(now)
        lead = starving or self._next_row(self._all_waiting(), credits)
        batch = [lead, *self._fill(lead, size - 1, credits)]
        if self.continuous or len(batch) >= size or lead.arrival + self.starvation_s <= now:
            due = float("-inf")
        else:
            due = min(r.arrival for r in batch) + self.max_queue_delay_s
        return _Plan(batch, due, starving is lead, credits)

    # -- state -----------------------------------------------------------------------------------
    def depth(self) -> dict[str, int]:
        """Waiting plus held requests per class."""
        return {name: len(q.waiting) + len(q.held) for name, q in self._queues.items()}

    def rejected(self) -> dict[str, int]:
        return {name: q.rejected for name, q in self._queues.items()}

    def oldest_arrival(self) -> float | None:
        arrivals = [r.arrival for q in self._queues.values() for r in (*q.waiting, *q.held)]
        return min(arrivals) if arrivals else None

    def __len__(self) -> int:
        return sum(self.depth().values())

    # -- internals -------------------------------------------------------------------------------
    def _queue(self, name: str) -> _ClassQueue:
        if name not in self._queues:
            raise KeyError(f"request class {name!r} is not configured; known: {', '.join(self._queues)}")
        return self._queues[name]

    def _all_waiting(self) -> list[ServingRequest]:
        return [r for q in self._queues.values() for r in q.waiting]

    def _starving_lead(self, now: float) -> ServingRequest | None:
        if not self._starvation_allowed():
            return None
        starving = [r for r in self._all_waiting() if r.arrival + self.starvation_s <= now]
        return min(starving, key=lambda r: r.arrival) if starving else None

    def _starvation_allowed(self) -> bool:
        return self._since_starving >= self.starvation_every - 1

    def _next_row(self, eligible: list[ServingRequest], credits: dict[str, float]) -> ServingRequest:
        """The request that takes the next row among `eligible` (urgency, then within a class the lead's length
        first, then age; module doc, 3.): strict, the first;
        weighted, the first of the class that smooth weighted round-robin (nginx's) picks among those with one
        there, charged in `credits`."""
        if self.policy == "strict":
            return eligible[0]
        contenders = {r.cls: self._queues[r.cls].config for r in eligible}
        chosen = max(contenders.values(), key=lambda c: (credits[c.name] + c.weight, -c.priority)).name
        for name, config in contenders.items():
            credits[name] += config.weight
        credits[chosen] -= sum(c.weight for c in contenders.values())
        return next(r for r in eligible if r.cls == chosen)

    def _fill(self, lead: ServingRequest, rows: int, credits: dict[str, float]) -> list[ServingRequest]:
        """Up to `rows` waiting requests to batch with `lead`, in the policy's order (module doc, 3.)."""
        waiting = [r for q in self._queues.values() for r in q.waiting if r is not lead]  # urgency, then age
        if not self.continuous:
            same = [r for r in waiting if r.prompt_len == lead.prompt_len]
            shorter = []
            if self.mix_lengths:
                room = (self.max_length or math.inf) - lead.prompt_len  # new tokens a row padded to the lead may ask
                shorter = [r for r in waiting if r.prompt_len < lead.prompt_len and r.max_new_tokens <= room]
            # urgency first, then a class's requests of the lead's length before its shorter ones, each in age order
            rank = {name: i for i, name in enumerate(self._queues)}
            waiting = sorted([*same, *shorter], key=lambda r: (rank[r.cls], r.prompt_len != lead.prompt_len))
        taken: list[ServingRequest] = []
        while waiting and len(taken) < rows:
            taken.append(self._next_row(waiting, credits))
            waiting.remove(taken[-1])
        return taken

    @staticmethod
    def _promote(queue: _ClassQueue) -> None:
        while queue.held and len(queue.waiting) < queue.config.queue_limit:
            queue.waiting.append(queue.held.popleft())
