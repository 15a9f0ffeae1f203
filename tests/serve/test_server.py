"""The HTTP server on loopback, exercised through the `openai` client and raw httpx: the tiny untrained
model on the torch engine (contracts, not quality)."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator

import httpx
import numpy as np
import openai
import pytest
from fastapi import FastAPI
from starlette.testclient import TestClient
from tokenizers import Tokenizer

from autoopt.bundle.load import special_token_ids
from autoopt.config.serving import ServingClassConfig, ServingConfig
from autoopt.engines.base import Engine
from autoopt.serve.app import ServedModel, create_app
from autoopt.serve.server import ServerThread, cut_off, uvicorn_server
from tests.serve.helpers import MAX_LENGTH, PROMPT, PacedEngine, PacedStreams, active_rows, paced_server, wait_until


@pytest.fixture(scope="module")
def client(server: ServerThread) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=30)


def test_completion_through_the_openai_client(client: openai.OpenAI, served: ServedModel) -> None:
    out = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=8)
    assert out.object == "text_completion" and out.choices[0].finish_reason in ("length", "stop")
    assert out.usage is not None and out.usage.prompt_tokens == len(served.tokenizer.encode(PROMPT).ids)
    assert out.usage.completion_tokens == 8 and isinstance(out.choices[0].text, str)


def test_a_seeded_sampled_completion_repeats_and_greedy_stays_the_default(client: openai.OpenAI) -> None:
    def text(**kwargs: object) -> str:
        return client.completions.create(model="tiny", prompt=PROMPT, max_tokens=12, **kwargs).choices[0].text

    greedy = text()
    assert text(temperature=0, seed=5, presence_penalty=0, frequency_penalty=0, logit_bias={"5": 0},
                extra_body={"repetition_penalty": 1, "min_p": 0}) == greedy
    assert text(seed=-(2**63), top_p=1, extra_body={"top_k": -1}) == greedy
    sampled = text(temperature=1.0, top_p=0.95, seed=5)
    assert sampled != greedy and text(temperature=1.0, top_p=0.95, seed=5) == sampled
    assert text(temperature=1.0, top_p=0.95, seed=6) != sampled
    assert text(temperature=1.0, seed=5, extra_body={"top_k": 1}) == greedy  # only the likeliest token left
    chunks = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=12, temperature=1.0, top_p=0.95,
                                       seed=5, stream=True)
    assert "".join(c.choices[0].text for c in chunks) == sampled


def test_with_continuous_batching_a_sampled_row_beside_a_greedy_one_keeps_both_texts(
    served: ServedModel, client: openai.OpenAI
) -> None:
    """The same seed draws the same text through the stream (rows joining a running batch) as through `generate`."""
    asks = [{"temperature": 1.0, "seed": 21}, {}, {"temperature": 0.7, "seed": 22, "top_p": 0.9}]
    alone = [client.completions.create(model="tiny", prompt=PROMPT, max_tokens=16, **a).choices[0].text for a in asks]
    engine = PacedStreams(served.engine, 0.02)  # slow enough steps that the three requests overlap
    app = create_app(ServedModel(engine, served.tokenizer, "tiny", MAX_LENGTH),
                     ServingConfig(max_batch=4, max_queue_delay_ms=0.0, batching="continuous"))
    with ServerThread(app) as running:
        paced = openai.OpenAI(base_url=running.url + "/v1", api_key="unused", max_retries=0, timeout=30)
        texts: dict[int, str] = {}

        def call(i: int) -> None:
            texts[i] = paced.completions.create(model="tiny", prompt=PROMPT, max_tokens=16, **asks[i]).choices[0].text

        threads = [threading.Thread(target=call, args=(i,)) for i in range(len(asks))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    assert [texts[i] for i in range(len(asks))] == alone
    assert max(engine.steps) >= 2  # some steps carried a sampling row beside another


def test_an_engine_that_decodes_greedily_only_refuses_a_temperature(served: ServedModel) -> None:
    running, _ = paced_server(served, 0.0, ServingConfig().classes)
    try:
        r = httpx.post(running.url + "/v1/completions", json={"prompt": "x", "temperature": 0.7}, timeout=30)
        assert r.status_code == 400 and r.json()["error"]["code"] == "unsupported_parameter"
        assert "engine paced decodes greedily only" in r.json()["error"]["message"]
        assert httpx.post(running.url + "/v1/completions", json={"prompt": "x", "temperature": 0, "max_tokens": 2},
                          timeout=30).status_code == 200
    finally:
        running.stop()


def test_chat_completion_with_priority_field_and_header(client: openai.OpenAI) -> None:
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": PROMPT}]
    out = client.chat.completions.create(model="tiny", messages=messages, max_tokens=4, extra_body={"priority": 0})
    assert out.object == "chat.completion" and out.choices[0].message.role == "assistant"
    out = client.chat.completions.create(model="tiny", messages=messages, max_tokens=4,
                                         extra_headers={"X-Priority": "P1"})
    assert out.usage is not None and out.usage.completion_tokens <= 4


def test_streaming_matches_the_non_streamed_text(client: openai.OpenAI) -> None:
    whole = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=12).choices[0].text
    chunks = list(client.completions.create(model="tiny", prompt=PROMPT, max_tokens=12, stream=True))
    assert "".join(c.choices[0].text for c in chunks) == whole
    assert chunks[-1].choices[0].finish_reason in ("length", "stop")
    chat = list(client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}],
                                               max_tokens=6, stream=True))
    assert chat[0].choices[0].delta.role == "assistant" and chat[-1].choices[0].finish_reason is not None


def test_a_stop_string_ends_the_text_before_it_streamed_or_not(client: openai.OpenAI) -> None:
    whole = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=40)
    text = whole.choices[0].text
    stop = text[len(text) // 3 : len(text) // 3 + 3]  # spans tokens or not: the stream holds back its beginning
    cut = text.find(stop)
    assert whole.usage is not None and whole.usage.completion_tokens == 40 and cut > 0

    stopped = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=40, stop=["\x00never", stop])
    chunks = list(client.completions.create(model="tiny", prompt=PROMPT, max_tokens=40, stop=stop, stream=True))
    chat = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=40)
    said = chat.choices[0].message.content or ""
    chat_stop = said[len(said) // 2 : len(said) // 2 + 2]
    chat_stopped = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}],
                                                  max_tokens=40, stop=chat_stop)

    assert stopped.choices[0].text == text[:cut] and stopped.choices[0].finish_reason == "stop"
    assert stopped.usage is not None and stopped.usage.completion_tokens < 40  # tokens read until the stop
    assert "".join(c.choices[0].text for c in chunks) == text[:cut] and chunks[-1].choices[0].finish_reason == "stop"
    assert chat_stopped.choices[0].message.content == said[: said.find(chat_stop)]


def test_a_stop_string_stops_the_engine_generating_its_row(served: ServedModel) -> None:
    running, engine = paced_server(served, 0.002, ServingConfig().classes)
    try:
        body = {"prompt": PROMPT, "max_tokens": 40}
        text = httpx.post(running.url + "/v1/completions", json=body, timeout=30).json()["choices"][0]["text"]
        steps = engine.steps
        stop = text[len(text) // 3 : len(text) // 3 + 3]
        stopped = httpx.post(running.url + "/v1/completions", json={**body, "stop": stop}, timeout=30).json()
        wait_until(lambda: active_rows(running.url) == 0)
    finally:
        running.stop()
    assert steps == 40 and stopped["choices"][0]["finish_reason"] == "stop"
    assert engine.steps - steps <= stopped["usage"]["completion_tokens"] + 1 < 40  # one step after it, at most


def test_a_reply_ends_at_an_eos_token_id_the_model_declares_that_is_not_special(served: ServedModel) -> None:
    ids = served.tokenizer.encode(PROMPT).ids
    greedy = [int(t[0]) for t in served.engine.generate(np.asarray([ids], dtype=np.int64), 6)]
    end = greedy[3]  # an ordinary token the model's generation_config could list as an eos_token_id
    model = ServedModel(served.engine, served.tokenizer, "tiny", MAX_LENGTH, frozenset({end}))
    with ServerThread(create_app(model, ServingConfig(max_batch=1, max_queue_delay_ms=0.0))) as running:
        reply = httpx.post(running.url + "/v1/completions", json={"prompt": PROMPT, "max_tokens": 6}, timeout=30).json()
    choice = reply["choices"][0]
    assert choice["finish_reason"] == "stop" and reply["usage"]["completion_tokens"] == greedy.index(end)
    assert choice["text"] == served.tokenizer.decode(greedy[: greedy.index(end)])


def test_ignore_eos_runs_every_choice_to_max_tokens_through_an_end_of_text_token(served: ServedModel) -> None:
    ids = served.tokenizer.encode(PROMPT).ids
    greedy = [int(t[0]) for t in served.engine.generate(np.asarray([ids], dtype=np.int64), 6)]
    model = ServedModel(served.engine, served.tokenizer, "tiny", MAX_LENGTH, frozenset({greedy[1]}))
    body = {"prompt": PROMPT, "max_tokens": 6, "ignore_eos": True, "n": 2}
    with ServerThread(create_app(model, ServingConfig(max_batch=2, max_queue_delay_ms=0.0))) as running:
        reply = httpx.post(running.url + "/v1/completions", json=body, timeout=30).json()
        lines = httpx.post(running.url + "/v1/completions", timeout=30,
                           json={**body, "stream": True, "stream_options": {"include_usage": True}}).text.splitlines()
    assert reply["usage"]["completion_tokens"] == 12
    assert [c["finish_reason"] for c in reply["choices"]] == ["length", "length"]
    assert {c["text"] for c in reply["choices"]} == {served.tokenizer.decode(greedy)}
    events = [json.loads(line[6:]) for line in lines if line.startswith("data: {")]
    assert events[-1]["usage"]["completion_tokens"] == 12
    assert sorted(c["finish_reason"] for e in events for c in e["choices"] if c["finish_reason"]) == ["length"] * 2


class EveryOtherSpecial(Engine):
    """The real engine's tokens, every other one replaced by a special token (its text is empty)."""

    name = "every-other-special"

    def __init__(self, inner: Engine, special: int) -> None:
        self.inner, self.special = inner, special

    @classmethod
    def load(cls, *args: object) -> Engine:  # pragma: no cover - not used
        raise NotImplementedError

    def generate(self, input_ids: np.ndarray, max_new_tokens: int) -> Iterator[np.ndarray]:
        for i, tokens in enumerate(self.inner.generate(input_ids, max_new_tokens)):
            yield np.full_like(tokens, self.special) if i % 2 else tokens

    def logits(self, input_ids: np.ndarray) -> np.ndarray:  # pragma: no cover - not used
        return self.inner.logits(input_ids)


def test_streamed_with_ignore_eos_every_token_sends_a_chunk_an_end_of_text_tokens_empty(served: ServedModel) -> None:
    special = min(special_token_ids(served.tokenizer))
    engine = EveryOtherSpecial(served.engine, special)
    model = ServedModel(engine, served.tokenizer, "tiny", MAX_LENGTH)
    body = {"prompt": PROMPT, "max_tokens": 6, "stream": True, "stream_options": {"include_usage": True}}
    with ServerThread(create_app(model, ServingConfig(max_batch=1, max_queue_delay_ms=0.0))) as running:
        def events(**extra: object) -> list[dict]:
            lines = httpx.post(running.url + "/v1/completions", json={**body, **extra}, timeout=30).text.splitlines()
            return [json.loads(line[6:]) for line in lines if line.startswith("data: {")]

        forced, ended = events(ignore_eos=True), events()
    tokens = [c for e in forced for c in e["choices"] if c["finish_reason"] is None]
    assert len(tokens) == forced[-1]["usage"]["completion_tokens"] == 6
    assert [c["text"] == "" for c in tokens] == [False, True] * 3
    assert ended[-1]["usage"]["completion_tokens"] == 1  # without it the reply ends at the first special token


def test_a_stream_asked_for_its_usage_ends_with_it(client: openai.OpenAI) -> None:
    chunks = list(client.completions.create(model="tiny", prompt=PROMPT, max_tokens=5, stream=True,
                                            stream_options={"include_usage": True}))
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 5 and all(c.usage is None for c in chunks[:-1])


def test_chat_content_may_be_a_list_of_text_parts(client: openai.OpenAI) -> None:
    parts = [{"type": "text", "text": "What does "}, {"type": "text", "text": "os.path.join do?"}]
    as_parts = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": parts}],
                                              max_tokens=6)
    as_text = client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "What does os.path.join do?"}], max_tokens=6)
    assert as_parts.choices[0].message.content == as_text.choices[0].message.content


def test_a_body_that_is_not_json_gets_a_message_that_says_so(server: ServerThread) -> None:
    r = httpx.post(server.url + "/v1/completions", content=b'{"prompt": "x",,}',
                   headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert r.json()["error"]["message"].startswith("the request body is not valid JSON (at character 15)")


def test_raw_stream_ends_with_done(server: ServerThread) -> None:
    with httpx.stream("POST", server.url + "/v1/completions", timeout=30,
                      json={"prompt": PROMPT, "max_tokens": 3, "stream": True}) as r:
        lines = [line for line in r.iter_lines() if line]
    assert r.headers["content-type"].startswith("text/event-stream")
    assert all(line.startswith("data: ") for line in lines) and lines[-1] == "data: [DONE]"


def test_models_health_and_metrics(server: ServerThread, client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list()] == ["tiny"]
    assert httpx.get(server.url + "/health").json()["status"] == "ok"
    client.completions.create(model="tiny", prompt=PROMPT, max_tokens=2, extra_body={"priority": "P2"})
    text = httpx.get(server.url + "/metrics").text
    for name in ("autoopt_request_e2e_seconds_bucket", 'autoopt_queue_depth{cls="P0"}', "autoopt_batch_size_count",
                 'autoopt_rejections_total{cls="P3"}', 'autoopt_requests_total{cls="P2",outcome="ok"}'):
        assert name in text


def test_concurrent_requests_are_batched(server: ServerThread) -> None:
    def call() -> None:
        httpx.post(server.url + "/v1/completions", json={"prompt": PROMPT, "max_tokens": 24}, timeout=30)

    before, busy_before = _batch_stats(server.url), _metric(server.url, "autoopt_engine_busy_seconds_total")
    started = time.perf_counter()
    threads = [threading.Thread(target=call) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    wall = time.perf_counter() - started
    count, rows = (a - b for a, b in zip(_batch_stats(server.url), before, strict=True))
    assert rows == 8 and count < 8  # some calls shared a batch
    busy = _metric(server.url, "autoopt_engine_busy_seconds_total") - busy_before
    assert 0 < busy <= wall  # one engine thread: never busier than the time that passed


class RecordingEngine(Engine):
    """The real engine, recording the prompt lengths of each call it gets."""

    name = "recording"
    mixed_lengths = True

    def __init__(self, inner: Engine) -> None:
        self.inner, self.calls = inner, []

    @classmethod
    def load(cls, *args: object) -> Engine:  # pragma: no cover - not used
        raise NotImplementedError

    def generate(self, input_ids: np.ndarray, max_new_tokens: int, prompt_lengths: np.ndarray | None = None):
        self.calls.append(None if prompt_lengths is None else prompt_lengths.tolist())
        padding = {} if prompt_lengths is None else {"prompt_lengths": prompt_lengths}
        return self.inner.generate(input_ids, max_new_tokens, **padding)

    def logits(self, input_ids: np.ndarray) -> np.ndarray:  # pragma: no cover - not used
        return self.inner.logits(input_ids)


def test_with_mix_lengths_concurrent_prompts_of_different_lengths_share_a_batch_and_keep_their_text(
    served: ServedModel, client: openai.OpenAI
) -> None:
    prompts = [[5, 17, 42, 7, 99, 3, 11, 64, 8, 1, 2, 250], [8, 1, 2, 250, 31], [300, 4, 77, 120, 6, 9, 12, 13]]
    alone = [client.completions.create(model="tiny", prompt=p, max_tokens=6).choices[0].text for p in prompts]
    engine = RecordingEngine(served.engine)
    app = create_app(ServedModel(engine, served.tokenizer, "tiny", MAX_LENGTH),
                     ServingConfig(max_batch=4, max_queue_delay_ms=200.0, mix_lengths=True))
    with ServerThread(app) as running:
        mixed = openai.OpenAI(base_url=running.url + "/v1", api_key="unused", max_retries=0, timeout=30)
        texts: dict[int, str] = {}

        def call(i: int) -> None:
            texts[i] = mixed.completions.create(model="tiny", prompt=prompts[i], max_tokens=6).choices[0].text

        threads = [threading.Thread(target=call, args=(i,)) for i in range(len(prompts))]
        for t in threads:  # the longest first, so that it leads and the shorter ones can join it
            t.start()
            time.sleep(0.05)
        for t in threads:
            t.join(30)
    assert [texts[i] for i in range(len(prompts))] == alone
    assert any(lengths and len(set(lengths)) > 1 for lengths in engine.calls)  # a batch held several lengths


@pytest.mark.parametrize("chunk", [0, 2], ids=["whole", "in-parts"])
def test_with_continuous_batching_a_later_request_joins_the_running_one_and_each_keeps_its_text(
    served: ServedModel, client: openai.OpenAI, chunk: int
) -> None:
    first, later = [5, 17, 42, 7, 99, 3, 11, 64, 8, 1, 2, 250], [8, 1, 2, 250, 31]
    alone = [client.completions.create(model="tiny", prompt=p, max_tokens=n).choices[0].text
             for p, n in ((first, 40), (later, 4))]
    engine = PacedStreams(served.engine, 0.02)
    app = create_app(ServedModel(engine, served.tokenizer, "tiny", MAX_LENGTH),
                     ServingConfig(max_batch=4, max_queue_delay_ms=0.0, batching="continuous", prefill_chunk=chunk))
    with ServerThread(app) as running:
        paced = openai.OpenAI(base_url=running.url + "/v1", api_key="unused", max_retries=0, timeout=30)
        texts: dict[int, str] = {}
        done: list[int] = []

        def call(i: int, prompt: list[int], new: int) -> None:
            texts[i] = paced.completions.create(model="tiny", prompt=prompt, max_tokens=new).choices[0].text
            done.append(i)

        long_one = threading.Thread(target=call, args=(0, first, 40))
        long_one.start()
        wait_until(lambda: active_rows(running.url) == 1)
        call(1, later, 4)  # sent while the first runs (40 steps of 20 ms): it joins, and ends first
        long_one.join(30)
        observed_rows = _metric(running.url, "autoopt_batch_size_sum")
    assert [texts[0], texts[1]] == alone
    assert done == [1, 0] and 2 in engine.steps
    assert observed_rows == sum(engine.steps)  # every step's rows reached /metrics


def test_with_continuous_batching_a_failed_step_fails_its_rows_and_the_next_request_is_served(
    served: ServedModel,
) -> None:
    engine = PacedStreams(served.engine, 0.01, fail_at_step=3)
    app = create_app(ServedModel(engine, served.tokenizer, "tiny", MAX_LENGTH),
                     ServingConfig(max_batch=2, max_queue_delay_ms=0.0, batching="continuous"))
    with ServerThread(app) as running:
        body = {"prompt": PROMPT, "max_tokens": 20}
        failed = httpx.post(running.url + "/v1/completions", json=body, timeout=30)
        assert failed.status_code == 500 and "injected engine failure" in failed.json()["error"]["message"]
        ok = httpx.post(running.url + "/v1/completions", json=body, timeout=30)
        assert ok.status_code == 200 and ok.json()["usage"]["completion_tokens"] == 20
        assert active_rows(running.url) == 0


def test_a_failed_step_ends_a_stream_with_an_error_event_after_the_text_so_far(served: ServedModel) -> None:
    engine = PacedStreams(served.engine, 0.01, fail_at_step=3)
    app = create_app(ServedModel(engine, served.tokenizer, "tiny", MAX_LENGTH),
                     ServingConfig(max_batch=2, max_queue_delay_ms=0.0, batching="continuous"))
    with ServerThread(app) as running:
        body = {"prompt": [5, 17, 42, 7], "max_tokens": 20, "stream": True}
        with httpx.stream("POST", running.url + "/v1/completions", json=body, timeout=30) as response:
            events = [line.removeprefix("data: ") for line in response.iter_lines() if line.startswith("data: ")]
    *chunks, last = [json.loads(e) for e in events]
    assert "injected engine failure" in last["error"]["message"] and last["error"]["code"] == "engine_error"
    assert chunks and all(c["choices"][0]["finish_reason"] is None for c in chunks)  # no [DONE], no finish


@pytest.mark.parametrize("chunk", [0, 2], ids=["whole", "in-parts"])
def test_with_continuous_batching_a_failed_prefill_fails_only_its_request(served: ServedModel, chunk: int) -> None:
    engine = PacedStreams(served.engine, 0.02, fail_prompt_len=3)
    app = create_app(ServedModel(engine, served.tokenizer, "tiny", MAX_LENGTH),
                     ServingConfig(max_batch=2, max_queue_delay_ms=0.0, batching="continuous", prefill_chunk=chunk))
    with ServerThread(app) as running:
        results: dict[str, httpx.Response] = {}
        caller = threading.Thread(target=lambda: results.setdefault("r", httpx.post(
            running.url + "/v1/completions", json={"prompt": [5, 17, 42, 7], "max_tokens": 30}, timeout=30)))
        caller.start()
        wait_until(lambda: active_rows(running.url) == 1)
        failed = httpx.post(running.url + "/v1/completions", json={"prompt": [8, 1, 2], "max_tokens": 4}, timeout=30)
        caller.join(30)
    assert failed.status_code == 500 and "injected prefill failure" in failed.json()["error"]["message"]
    assert results["r"].status_code == 200 and results["r"].json()["usage"]["completion_tokens"] == 30


def test_with_continuous_batching_shutdown_mid_request_finishes_it(served: ServedModel) -> None:
    engine = PacedStreams(served.engine, 0.02)
    app = create_app(ServedModel(engine, served.tokenizer, "tiny", MAX_LENGTH),
                     ServingConfig(max_batch=2, max_queue_delay_ms=0.0, batching="continuous"))
    running = ServerThread(app).start()
    results: dict[str, httpx.Response] = {}
    caller = threading.Thread(target=lambda: results.setdefault("r", httpx.post(
        running.url + "/v1/completions", json={"prompt": PROMPT, "max_tokens": 30}, timeout=30)))
    caller.start()
    wait_until(lambda: active_rows(running.url) == 1)
    assert running.stop(timeout_s=30)
    caller.join(30)
    assert results["r"].status_code == 200 and results["r"].json()["usage"]["completion_tokens"] == 30


def test_with_continuous_batching_a_client_that_disconnects_leaves_the_stream(served: ServedModel) -> None:
    engine = PacedStreams(served.engine, 0.02)
    app = create_app(ServedModel(engine, served.tokenizer, "tiny", MAX_LENGTH),
                     ServingConfig(max_batch=2, max_queue_delay_ms=0.0, batching="continuous"))
    with ServerThread(app) as running:
        body = {"prompt": PROMPT, "max_tokens": 200, "stream": True}
        with httpx.stream("POST", running.url + "/v1/completions", json=body, timeout=30) as r:
            next(line for line in r.iter_lines() if line.startswith("data: "))
        wait_until(lambda: active_rows(running.url) == 0)
        steps = len(engine.steps)
        assert steps < 150
        time.sleep(0.2)
        assert len(engine.steps) == steps  # an empty stream takes no step
        ok = httpx.post(running.url + "/v1/completions", json={"prompt": PROMPT, "max_tokens": 2}, timeout=30)
        assert ok.status_code == 200


def _metric(url: str, name: str) -> float:
    (value,) = [float(line.split()[1]) for line in httpx.get(url + "/metrics").text.splitlines() if line.startswith(name + " ")]
    return value


def _batch_stats(url: str) -> tuple[float, float]:
    values = {}
    for line in httpx.get(url + "/metrics").text.splitlines():
        if line.startswith(("autoopt_batch_size_count", "autoopt_batch_size_sum")):
            name, value = line.split()
            values[name] = float(value)
    return values["autoopt_batch_size_count"], values["autoopt_batch_size_sum"]


BAD_REQUESTS = [
    ("/v1/completions", b"{not json", 400, "invalid_request"),
    ("/v1/completions", b"[1, 2]", 400, "invalid_request"),
    ("/v1/completions", {"max_tokens": 4}, 400, "invalid_request"),  # no prompt
    ("/v1/completions", {"prompt": 42}, 400, "invalid_request"),
    ("/v1/completions", {"prompt": "x", "max_tokens": "8"}, 400, "invalid_request"),
    ("/v1/completions", {"prompt": "x", "max_tokens": 0}, 400, "invalid_request"),
    ("/v1/completions", {"prompt": "x", "stream": "yes"}, 400, "invalid_request"),
    ("/v1/completions", {"prompt": "x", "max_tokens": MAX_LENGTH}, 400, "context_length_exceeded"),
    ("/v1/completions", {"prompt": "word " * 400}, 400, "context_length_exceeded"),
    ("/v1/completions", {"prompt": ""}, 400, "invalid_prompt"),
    ("/v1/completions", {"prompt": [1, 999999]}, 400, "invalid_prompt"),
    ("/v1/completions", {"prompt": ["a", "b"]}, 400, "invalid_prompt"),
    ("/v1/completions", {"prompt": "x", "n": 0}, 400, "invalid_n"),
    ("/v1/completions", {"prompt": "x", "priority": 9}, 400, "invalid_priority"),
    ("/v1/completions", {"prompt": "x", "priority": "gold"}, 400, "invalid_priority"),
    ("/v1/completions", {"prompt": "x", "model": "gpt-9"}, 404, "model_not_found"),
    ("/v1/chat/completions", {"messages": []}, 400, "invalid_request"),
    ("/v1/chat/completions", {"messages": [{"role": "user"}]}, 400, "invalid_request"),
    ("/v1/chat/completions", {"messages": "hello"}, 400, "invalid_request"),
    ("/v1/completions", {"prompt": "x", "stop": ["a", "b", "c", "d", "e"]}, 400, "invalid_stop"),
    ("/v1/completions", {"prompt": "x", "stop": ""}, 400, "invalid_stop"),
    ("/v1/completions", {"prompt": "x", "echo": True}, 400, "unsupported_parameter"),
    ("/v1/completions", {"prompt": "x", "logprobs": 2}, 400, "unsupported_parameter"),
    ("/v1/completions", {"prompt": "x", "best_of": 3}, 400, "unsupported_parameter"),
    ("/v1/completions", {"prompt": "x", "logprobs": 0}, 400, "unsupported_parameter"),
    ("/v1/completions", {"prompt": "x", "stream_options": {"include_usage": True}}, 400, "invalid_request"),
    ("/v1/completions", {"prompt": "x", "suffix": "}"}, 400, "unsupported_parameter"),
    ("/v1/completions", {"prompt": "x", "temperature": 2.5}, 400, "invalid_request"),
    ("/v1/completions", {"prompt": "x", "temperature": "hot"}, 400, "invalid_request"),
    ("/v1/completions", {"prompt": "x", "temperature": 1, "top_p": 0}, 400, "invalid_request"),
    ("/v1/completions", {"prompt": "x", "temperature": 1, "top_k": -2}, 400, "invalid_request"),
    ("/v1/completions", {"prompt": "x", "presence_penalty": 0.5}, 400, "unsupported_parameter"),
    ("/v1/completions", {"prompt": "x", "frequency_penalty": -1}, 400, "unsupported_parameter"),
    ("/v1/completions", {"prompt": "x", "logit_bias": {"5": 10}}, 400, "unsupported_parameter"),
    ("/v1/completions", {"prompt": "x", "temperature": 1, "min_p": 0.1}, 400, "unsupported_parameter"),
    ("/v1/completions", {"prompt": "x", "temperature": 1, "typical_p": 0.5}, 400, "unsupported_parameter"),
    ("/v1/completions", {"prompt": "x", "repetition_penalty": 1.2}, 400, "unsupported_parameter"),
    ("/v1/completions", {"prompt": "x", "top_p": 0.9}, 400, "invalid_request"),
    ("/v1/completions", {"prompt": "x", "top_k": 40}, 400, "invalid_request"),
    ("/v1/completions", {"prompt": "x", "temperature": 1, "seed": 2**64}, 400, "invalid_request"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "logprobs": True}, 400,
     "unsupported_parameter"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, 400,
     "invalid_request"),
    ("/v1/nothing", {"prompt": "x"}, 404, "not_found"),
    ("/v1/completions", b"x" * (2 << 20), 413, "body_too_large"),
]


@pytest.mark.parametrize(("path", "body", "status", "code"), BAD_REQUESTS)
def test_malformed_requests_get_4xx_json_errors(server: ServerThread, path: str, body: object, status: int,
                                                code: str) -> None:
    if isinstance(body, bytes):
        r = httpx.post(server.url + path, content=body, headers={"content-type": "application/json"}, timeout=30)
    else:
        r = httpx.post(server.url + path, json=body, timeout=30)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["code"] == code and error["message"] and error["type"]


def test_wrong_method_and_bad_header_priority_are_json_errors(server: ServerThread) -> None:
    r = httpx.get(server.url + "/v1/completions")
    assert r.status_code == 405 and "error" in r.json()
    r = httpx.post(server.url + "/v1/completions", json={"prompt": "x"}, headers={"X-Priority": "P7"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_priority"
    assert httpx.get(server.url + "/health").status_code == 200  # still serving


@pytest.mark.slow
def test_full_class_queue_gives_429_with_retry_after(served: ServedModel) -> None:
    classes = [ServingClassConfig("P0", 0, 200.0, 0.5, 1, "reject"), ServingClassConfig("P3", 3, 0.0, 0.5, 1)]
    running, engine = paced_server(served, 0.02, classes)
    try:
        body = {"prompt": PROMPT, "max_tokens": 40, "priority": 0}
        first = threading.Thread(target=lambda: httpx.post(running.url + "/v1/completions", json=body, timeout=30))
        first.start()
        wait_until(lambda: active_rows(running.url) == 1)  # the first runs; the queue is empty
        second = threading.Thread(target=lambda: httpx.post(running.url + "/v1/completions", json=body, timeout=30))
        second.start()
        wait_until(lambda: httpx.get(running.url + "/health").json()["queue_depth"]["P0"] == 1)
        r = httpx.post(running.url + "/v1/completions", json=body, timeout=30)
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        assert r.json()["error"]["code"] == "queue_full"
        client = openai.OpenAI(base_url=running.url + "/v1", api_key="unused", max_retries=0)
        with pytest.raises(openai.RateLimitError):
            client.completions.create(model="tiny", prompt=PROMPT, max_tokens=2, extra_body={"priority": 0})
        first.join(30)
        second.join(30)
        assert 'autoopt_rejections_total{cls="P0"} 2.0' in httpx.get(running.url + "/metrics").text
    finally:
        running.stop()


@pytest.mark.slow
def test_client_disconnect_mid_stream_frees_its_slot(served: ServedModel) -> None:
    classes = [ServingClassConfig("P0", 0, 200.0, 1.0, 1, "reject")]
    running, engine = paced_server(served, 0.02, classes)
    try:
        body = {"prompt": PROMPT, "max_tokens": 200, "stream": True}
        with httpx.stream("POST", running.url + "/v1/completions", json=body, timeout=30) as r:
            lines = r.iter_lines()
            next(line for line in lines if line.startswith("data: "))
            assert active_rows(running.url) == 1
        # The connection is closed: the row stops being tracked and generation ends well before 200 steps.
        wait_until(lambda: active_rows(running.url) == 0)
        steps = engine.steps
        assert steps < 150
        time.sleep(0.2)
        assert engine.steps <= steps + 1  # no more decode steps for the departed client
        ok = httpx.post(running.url + "/v1/completions", json={"prompt": PROMPT, "max_tokens": 2}, timeout=30)
        assert ok.status_code == 200  # the slot is free again
        text = httpx.get(running.url + "/metrics").text
        assert 'autoopt_requests_total{cls="P0",outcome="disconnected"} 1.0' in text
    finally:
        running.stop()


@pytest.mark.slow
def test_shutdown_mid_request_finishes_it(served: ServedModel) -> None:
    classes = [ServingClassConfig("P0", 0, 200.0, 1.0, 4, "reject")]
    running, _ = paced_server(served, 0.02, classes)
    results: dict[str, httpx.Response] = {}

    def call() -> None:
        results["r"] = httpx.post(running.url + "/v1/completions", json={"prompt": PROMPT, "max_tokens": 30},
                                  timeout=30)

    caller = threading.Thread(target=call)
    caller.start()
    wait_until(lambda: active_rows(running.url) == 1)
    assert running.stop(timeout_s=30)  # returns only after in-flight work is done
    caller.join(30)
    assert running.server.config.app.state.server.drained  # type: ignore[attr-defined]
    r = results["r"]
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 30
    with pytest.raises(httpx.ConnectError):
        httpx.get(running.url + "/health", timeout=2)


@pytest.mark.slow
def test_a_shutdown_whose_drain_times_out_says_requests_were_left_unanswered(served: ServedModel) -> None:
    """`serve` then reports the requests cut off and exits 1, instead of "no request was left unanswered". Here the
    engine is in a 3 s step when the worker is told to close, and may take 0.1 s."""
    engine = PacedEngine(served.engine, 3.0)
    model = ServedModel(engine, served.tokenizer, "tiny", MAX_LENGTH)
    classes = [ServingClassConfig("P0", 0, 200.0, 1.0, 4, "reject")]
    app = create_app(model, ServingConfig(classes=classes, max_batch=1), drain_timeout_s=0.1)
    running = ServerThread(app, graceful_timeout_s=0).start()
    caller = threading.Thread(target=lambda: httpx.post(running.url + "/v1/completions", timeout=30,
                                                        json={"prompt": PROMPT, "max_tokens": 2}), daemon=True)
    caller.start()
    wait_until(lambda: active_rows(running.url) == 1)

    assert running.stop(timeout_s=30)

    assert app.state.server.drained is False
    assert app.state.server.worker.close(30)  # the step in flight ends; the engine is free for the next test


@pytest.mark.slow
def test_client_that_gives_up_on_a_plain_request_frees_its_slot(served: ServedModel) -> None:
    classes = [ServingClassConfig("P0", 0, 200.0, 1.0, 1, "reject")]
    running, engine = paced_server(served, 0.02, classes)
    try:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(running.url + "/v1/completions", json={"prompt": PROMPT, "max_tokens": 200}, timeout=0.5)
        wait_until(lambda: active_rows(running.url) == 0)
        assert engine.steps < 150
        text = httpx.get(running.url + "/metrics").text
        assert 'autoopt_requests_total{cls="P0",outcome="disconnected"} 1.0' in text
    finally:
        running.stop()


def _outcomes(app: FastAPI) -> dict[str, float]:
    """The app's count of finished requests per outcome."""
    return {s.labels["outcome"]: s.value for m in app.state.server.metrics.registry.collect()
            if m.name == "autoopt_requests" for s in m.samples if s.name == "autoopt_requests_total"}


def _call_in_background(url: str, body: dict[str, object]) -> threading.Thread:
    """Send `body` from a daemon thread and read the reply to its end (or its failure: not this test's concern)."""

    def call() -> None:
        try:
            with httpx.stream("POST", url + "/v1/completions", json=body, timeout=30) as r:
                r.read()
        except httpx.HTTPError:
            pass

    caller = threading.Thread(target=call, daemon=True)
    caller.start()
    return caller


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_a_request_the_shutdowns_wait_cuts_off_is_counted_as_such_and_reported(served: ServedModel,
                                                                              stream: bool) -> None:
    """uvicorn's graceful wait (0 s here) runs out and cancels the handler: the request is withdrawn, so the worker
    drains at once, but it was left unanswered: not a client's disconnect, and `serve` must not say all were
    answered."""
    engine = PacedEngine(served.engine, 0.02)
    app = create_app(ServedModel(engine, served.tokenizer, "tiny", MAX_LENGTH),
                     ServingConfig(max_batch=1, max_queue_delay_ms=0.0))
    running = ServerThread(app, graceful_timeout_s=0).start()
    caller = _call_in_background(running.url, {"prompt": PROMPT, "max_tokens": 200, "stream": stream})
    wait_until(lambda: active_rows(running.url) == 1)

    assert running.stop(timeout_s=30)
    caller.join(30)

    assert _outcomes(app) == {"shutdown": 1.0}
    assert app.state.server.drained and engine.steps < 150  # withdrawn: its row stopped
    assert cut_off(running.server, app) == (
        "1 request(s) in flight outlasted the HTTP server's 0 s wait for them and were cancelled unanswered")


class FailingTokenizer:
    """The real tokenizer, whose decode fails: an unexpected exception in the handler, mid-reply."""

    def __init__(self, inner: Tokenizer) -> None:
        self.inner = inner

    def decode(self, ids: list[int]) -> str:
        raise RuntimeError("injected decode failure")

    def __getattr__(self, name: str):  # noqa: ANN204 - encode, vocab, special tokens: as the real one
        return getattr(self.inner, name)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_a_handler_that_fails_unexpectedly_counts_an_error_and_withdraws_its_request(served: ServedModel,
                                                                                    stream: bool) -> None:
    engine = PacedEngine(served.engine, 0.02)
    model = ServedModel(engine, FailingTokenizer(served.tokenizer), "tiny", MAX_LENGTH)  # type: ignore[arg-type]
    app = create_app(model, ServingConfig(max_batch=1, max_queue_delay_ms=0.0))
    running = ServerThread(app).start()
    try:
        _call_in_background(running.url, {"prompt": PROMPT, "max_tokens": 200, "stream": stream}).join(30)
        wait_until(lambda: active_rows(running.url) == 0)
        assert _outcomes(app) == {"error": 1.0}
        assert engine.steps < 150
    finally:
        running.stop()


def test_health_answers_503_from_the_moment_shutdown_begins(served: ServedModel) -> None:
    """Not only at the lifespan's end. (uvicorn closes its listener about 0.1 s after this, and then refuses probes:
    this is what an app served by another server, or a probe in that window, gets.)"""
    app = create_app(served, ServingConfig())
    server = uvicorn_server(app, "127.0.0.1", 0)
    assert TestClient(app).get("/health").status_code == 200

    server.handle_exit(signal.SIGTERM, None)  # what uvicorn runs on the signal, before its wait

    r = TestClient(app).get("/health")
    assert r.status_code == 503 and r.json()["error"]["code"] == "shutting_down"


def test_a_chunked_body_over_the_limit_gets_413_too(server: ServerThread) -> None:
    body = b'{"prompt": "' + b"x" * (2 << 20) + b'"}'

    def chunks() -> Iterator[bytes]:  # no Content-Length: sent with Transfer-Encoding: chunked
        for i in range(0, len(body), 64 << 10):
            yield body[i : i + (64 << 10)]

    r = httpx.post(server.url + "/v1/completions", content=chunks(), headers={"content-type": "application/json"},
                   timeout=30)
    assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"
    ok = httpx.post(server.url + "/v1/completions", content=iter([b'{"prompt": "x", ', b'"max_tokens": 2}']),
                    headers={"content-type": "application/json"}, timeout=30)
    assert ok.status_code == 200 and ok.json()["usage"]["completion_tokens"] == 2


class SlowTokenizer:
    """The real tokenizer, taking `pause_s` to encode: time the client waits before the request is queued."""

    def __init__(self, inner: Tokenizer, pause_s: float) -> None:
        self.inner, self.pause_s = inner, pause_s

    def encode(self, text: str):  # noqa: ANN201 - the tokenizers Encoding
        time.sleep(self.pause_s)
        return self.inner.encode(text)

    def __getattr__(self, name: str):  # noqa: ANN204 - decode, vocab, special tokens: as the real one
        return getattr(self.inner, name)


def test_the_reported_latencies_include_the_time_before_the_request_is_queued(served: ServedModel) -> None:
    model = ServedModel(served.engine, SlowTokenizer(served.tokenizer, 0.3), "tiny", MAX_LENGTH)  # type: ignore[arg-type]
    with ServerThread(create_app(model, ServingConfig(max_batch=1, max_queue_delay_ms=0.0))) as running:
        httpx.post(running.url + "/v1/completions", json={"prompt": PROMPT, "max_tokens": 1, "priority": "P2"},
                   timeout=30)
        text = httpx.get(running.url + "/metrics").text

    sums = {line.split()[0]: float(line.split()[1]) for line in text.splitlines()
            if line.startswith(("autoopt_request_e2e_seconds_sum", "autoopt_request_queue_seconds_sum"))}
    assert sums['autoopt_request_e2e_seconds_sum{cls="P2"}'] >= 0.3
    assert sums['autoopt_request_queue_seconds_sum{cls="P2"}'] >= 0.3
