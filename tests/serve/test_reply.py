from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer

from autoopt.config.serving import ServingClassConfig
from autoopt.serve.metrics import Metrics
from autoopt.serve.reply import Reply, Text

P0 = ServingClassConfig("P0", 0, 200.0)


def test_a_reply_ended_by_an_end_of_text_first_token_is_still_timed() -> None:
    loop = asyncio.new_event_loop()
    try:
        reply = Reply(loop, frozenset({7}), arrival=1.0)
        reply.started(1.2)
        assert reply.token(0, 7, 1.5) is False and reply.finish_reason == "stop"
        metrics = Metrics([P0])
        metrics.record("P0", reply, "ok")
    finally:
        loop.close()

    assert metrics.registry.get_sample_value("autoopt_request_e2e_seconds_count", {"cls": "P0"}) == 1
    assert metrics.registry.get_sample_value("autoopt_request_e2e_seconds_sum", {"cls": "P0"}) == 0.5
    assert metrics.registry.get_sample_value("autoopt_request_ttft_seconds_count", {"cls": "P0"}) == 1


def test_each_finished_reply_records_its_longest_wait_between_two_tokens() -> None:
    loop = asyncio.new_event_loop()
    metrics = Metrics([P0])
    try:
        stalled, single = Reply(loop, frozenset(), arrival=0.0), Reply(loop, frozenset(), arrival=0.0)
        for i, t in enumerate((0.10, 0.11, 0.19, 0.20)):  # another prompt's prefill held the third token 80 ms
            assert stalled.token(i, 1, t)
        single.token(0, 1, 0.3)
        for reply in (stalled, single):
            metrics.record("P0", reply, "ok")
    finally:
        loop.close()

    gap = stalled.largest_gap(0.20)
    assert gap is not None and abs(gap - 0.08) < 1e-9 and single.largest_gap(0.3) is None
    assert stalled.largest_gap(0.11) is not None and abs(stalled.largest_gap(0.11) - 0.01) < 1e-9
    assert metrics.registry.get_sample_value("autoopt_request_itl_max_seconds_count", {"cls": "P0"}) == 1
    assert abs(metrics.registry.get_sample_value("autoopt_request_itl_max_seconds_sum", {"cls": "P0"}) - 0.08) < 1e-9


def test_each_finished_reply_of_a_class_with_deadlines_is_judged_met_or_missed() -> None:
    streaming = ServingClassConfig("S", 1, 300.0, ttft_slo_ms=100.0, itl_slo_ms=50.0)
    metrics = Metrics([streaming, ServingClassConfig("B", 3)])  # B: best effort
    loop = asyncio.new_event_loop()

    def reply(*times: float) -> Reply:
        timed = Reply(loop, frozenset(), arrival=1.0)
        for i, t in enumerate(times):
            timed.token(i, 1, 1.0 + t)
        return timed

    stopped = reply(0.05, 0.06, 0.07, 0.20)  # a stop string completed at 0.07; the row ran on before it stopped
    stopped.stopped_at = 1.07
    try:
        cases = [
            ("S", reply(0.09, 0.13, 0.17), "ok"),  # within each deadline
            ("S", reply(0.05), "ok"),  # one token: no stall to judge
            ("S", stopped, "ok"),  # the 130 ms after its end is no stall of the reply
            ("S", reply(0.101, 0.12, 0.15), "ok"),  # first token 1 ms late
            ("S", reply(0.05, 0.06, 0.111, 0.12), "ok"),  # a 51 ms stall
            ("S", reply(0.09, 0.13, 0.17, 0.21, 0.25, 0.29, 0.301), "ok"),  # last token 1 ms late
            ("S", reply(0.05), "error"),
            ("S", reply(0.05), "disconnected"),  # the client left: not judged
            ("B", reply(0.5, 2.0), "ok"),  # nothing to judge
        ]
        for cls, timed, outcome in cases:
            metrics.record(cls, timed, outcome)
        metrics.rejected("S")  # refused with 429: missed, as the capacity search counts it
        metrics.rejected("B")
    finally:
        loop.close()

    sample = metrics.registry.get_sample_value
    assert sample("autoopt_requests_slo_total", {"cls": "S", "verdict": "met"}) == 3
    assert sample("autoopt_requests_slo_total", {"cls": "S", "verdict": "missed"}) == 5
    assert all(sample("autoopt_requests_slo_total", {"cls": "B", "verdict": v}) is None for v in ("met", "missed"))


def _pushed(text: Text, ids: list[int]) -> list[str]:
    return [text.push(i) for i in ids]


def test_text_holds_back_an_incomplete_character_and_the_start_of_a_stop_string(tiny_model: Path) -> None:
    tokenizer = Tokenizer.from_file(str(tiny_model / "tokenizer.json"))
    ids = tokenizer.encode("ab中c。d").ids  # byte-level: 中 and 。 each span several tokens
    c = next(i for i, token in enumerate(ids) if tokenizer.decode([token]) == "c")
    assert "\ufffd" in tokenizer.decode(ids[:3])

    plain = Text(tokenizer, [])
    sent = _pushed(plain, ids)
    assert "\ufffd" not in "".join(sent) and "".join(sent) + plain.flush() == "ab中c。d"
    stopped = Text(tokenizer, ["c。"])
    sent = _pushed(stopped, ids)
    assert sent[c] == ""  # "c" may begin the stop string: held back
    assert stopped.stopped and "".join(sent) == "ab中" and stopped.text() == "ab中"


def test_a_reply_ending_inside_a_character_keeps_the_characters_before_it(tiny_model: Path) -> None:
    tokenizer = Tokenizer.from_file(str(tiny_model / "tokenizer.json"))
    ids = tokenizer.encode("ab中c。").ids[:-1]  # the last character's bytes never all arrive
    text = Text(tokenizer, ["zz"])
    sent = "".join(_pushed(text, ids)) + text.flush()
    assert sent == text.text() == tokenizer.decode(ids) and sent.startswith("ab中c")
    full = tokenizer.encode("x中").ids
    stop_in_last = Text(tokenizer, ["中"])
    assert "".join(_pushed(stop_in_last, full)) == "x" and stop_in_last.stopped


class _Counting:
    """A tokenizer that counts the ids it is asked to decode."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self._tokenizer, self.decoded = tokenizer, 0

    def decode(self, ids: list[int]) -> str:
        self.decoded += len(ids)
        return self._tokenizer.decode(ids)

    def get_added_tokens_decoder(self) -> dict:
        return self._tokenizer.get_added_tokens_decoder()

    def get_vocab_size(self, with_added_tokens: bool = True) -> int:
        return self._tokenizer.get_vocab_size(with_added_tokens)


def _metaspace_tokenizer() -> Tokenizer:
    """A sentencepiece-style tokenizer (a word's first piece carries its leading space as "▁"), trained here."""
    from tokenizers import decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    text = ["the quick brown fox jumps over the lazy dog", "a stop string ends the reply", "tokens arrive one by one"]
    tokenizer.train_from_iterator(text * 20, trainers.BpeTrainer(vocab_size=120, special_tokens=["<unk>"]))
    return tokenizer


@pytest.mark.parametrize("kind", ["byte-level", "metaspace"])
def test_text_streamed_piece_by_piece_is_the_whole_decode_of_any_ids(tiny_model: Path, kind: str) -> None:
    tokenizer = Tokenizer.from_file(str(tiny_model / "tokenizer.json")) if kind == "byte-level" else \
        _metaspace_tokenizer()
    rng = np.random.default_rng(0)
    for _ in range(100):  # random ids (special ones too): byte-level ones split characters, make invalid UTF-8
        ids = rng.integers(0, tokenizer.get_vocab_size(), size=int(rng.integers(1, 60))).tolist()
        whole = tokenizer.decode(ids)
        text = Text(tokenizer, [])
        sent = _pushed(text, ids)
        assert "".join(sent) + text.flush() == whole == text.text()
        assert all("\ufffd" not in s[-1:] for s in sent)  # an incomplete last character is held back
        words = [w for w in whole.split() if w.isascii() and len(w) > 2]
        if words:  # a stop string: the reply ends before its first occurrence
            stop = words[int(rng.integers(len(words)))][1:]
            stopped = Text(tokenizer, [stop])
            assert "".join(_pushed(stopped, ids)) == stopped.text() == whole[: whole.find(stop)] and stopped.stopped


def test_text_finds_a_stop_string_split_over_many_tokens_in_a_long_reply(tiny_model: Path) -> None:
    tokenizer = Tokenizer.from_file(str(tiny_model / "tokenizer.json"))
    words = " ".join(f"w{i}" for i in range(300))
    ids = tokenizer.encode(words + " STOP here and more").ids
    text = Text(tokenizer, [" STOP here"])

    sent = "".join(_pushed(text, ids))

    assert text.stopped and sent == text.text() == words


@pytest.mark.parametrize("tail", ["words", "end-of-text"])
def test_text_decodes_each_token_once_or_so_however_long_the_reply(tiny_model: Path, tail: str) -> None:
    plain = Tokenizer.from_file(str(tiny_model / "tokenizer.json"))
    tokenizer = _Counting(plain)
    eos = plain.token_to_id("<|endoftext|>")
    ids = plain.encode("plain ascii words " * 200).ids if tail == "words" else plain.encode("hi").ids + [eos] * 800
    text = Text(tokenizer, ["never"])  # type: ignore[arg-type]

    _pushed(text, ids)  # under ignore_eos a reply runs on through end-of-text tokens, which decode to nothing

    assert len(ids) > 500 and tokenizer.decoded < 6 * len(ids)  # decoding the whole reply each token: ~n^2 / 2


def _byte_fallback_tokenizer() -> Tokenizer:
    """A Llama-style tokenizer: sentencepiece pieces, and a token per byte for what they lack."""
    from tokenizers import decoders, models, normalizers

    pieces = ["<unk>", "<s>", "</s>", *(f"<0x{b:02X}>" for b in range(256)),
              "▁hello", "▁world", "▁a", "a", "▁", "中"]
    tokenizer = Tokenizer(models.BPE(vocab={p: i for i, p in enumerate(pieces)}, merges=[], unk_token="<unk>",
                                     byte_fallback=True))
    tokenizer.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tokenizer.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                           decoders.Strip(" ", 1, 0)])
    tokenizer.add_special_tokens(["<s>", "</s>"])
    return tokenizer


def _bytes(text: str) -> list[str]:
    return [f"<0x{b:02X}>" for b in text.encode()]


@pytest.mark.parametrize("tokens", [
    [*_bytes("\n中中"), "</s>", *_bytes("中é")],  # a character's bytes on both sides of an end-of-text token
    [*_bytes("😀a\n \n"), "▁hello"],  # a window stepped back by a fixed count started inside the emoji
])
def test_text_windows_start_at_a_character_boundary_for_a_byte_fallback_decoder(tokens: list[str]) -> None:
    tokenizer = _byte_fallback_tokenizer()
    ids = [tokenizer.token_to_id(t) for t in tokens]
    text = Text(tokenizer, [])

    assert "".join(_pushed(text, ids)) + text.flush() == tokenizer.decode(ids)


def test_text_streams_the_whole_decode_through_a_byte_fallback_decoder_and_special_tokens() -> None:
    tokenizer = _byte_fallback_tokenizer()
    rng = np.random.default_rng(1)
    words = ["hello", "world", "a", "中", "é", "😀", "\n", "ü中", "x"]
    for _ in range(200):  # valid UTF-8 (a reply cut inside a character aside), end-of-text tokens anywhere
        ids = tokenizer.encode(" ".join(rng.choice(words, size=int(rng.integers(1, 12))))).ids
        for _ in range(int(rng.integers(0, 4))):
            ids.insert(int(rng.integers(0, len(ids) + 1)), tokenizer.token_to_id("</s>"))
        text = Text(tokenizer, [])
        assert "".join(_pushed(text, ids)) + text.flush() == tokenizer.decode(ids) == text.text()


@pytest.mark.parametrize("reply", ["cjk", "beyond-vocabulary"])
def test_text_cost_stays_flat_for_byte_coded_characters_and_ids_the_tokenizer_lacks(reply: str) -> None:
    plain = _byte_fallback_tokenizer()
    tokenizer = _Counting(plain)
    if reply == "cjk":  # each character three byte tokens, the run of them unbroken
        ids = [plain.token_to_id(t) for t in _bytes("日本語の文章です。" * 60)]
    else:  # a model whose vocabulary is padded past the tokenizer's: those ids decode to nothing
        ids = plain.encode("hello world").ids + [plain.get_vocab_size() + 7] * 1500
    text = Text(tokenizer, [])  # type: ignore[arg-type]

    sent = "".join(_pushed(text, ids)) + text.flush()

    assert sent == plain.decode(ids) and len(ids) > 1000 and tokenizer.decoded < 12 * len(ids)


def test_a_byte_fallback_reply_cut_inside_a_character_is_whole_in_its_text() -> None:
    tokenizer = _byte_fallback_tokenizer()  # the decoder turns the whole byte run, the sent newline too, into U+FFFDs
    ids = [tokenizer.token_to_id(t) for t in ["▁hello", "<0x0A>", "<0xF0>", "<0x9F>"]]
    text = Text(tokenizer, [])

    sent = "".join(_pushed(text, ids)) + text.flush()

    assert sent == "hello\n\ufffd\ufffd" and text.text() == tokenizer.decode(ids) == "hello\ufffd\ufffd\ufffd"
