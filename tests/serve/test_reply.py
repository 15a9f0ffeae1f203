from __future__ import annotations

import asyncio

from autoopt.serve.app import _Metrics, _Reply


def test_a_reply_ended_by_an_end_of_text_first_token_is_still_timed() -> None:
    loop = asyncio.new_event_loop()
    try:
        reply = _Reply(loop, frozenset({7}), arrival=1.0)
        reply.started(1.2)
        assert reply.token(0, 7, 1.5) is False and reply.finish_reason == "stop"
        metrics = _Metrics(["P0"])
        metrics.record("P0", reply, "ok")
    finally:
        loop.close()

    assert metrics.registry.get_sample_value("autoopt_request_e2e_seconds_count", {"cls": "P0"}) == 1
    assert metrics.registry.get_sample_value("autoopt_request_e2e_seconds_sum", {"cls": "P0"}) == 0.5
    assert metrics.registry.get_sample_value("autoopt_request_ttft_seconds_count", {"cls": "P0"}) == 1
