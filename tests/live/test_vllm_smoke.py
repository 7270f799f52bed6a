"""Smoke tests against one real vLLM (CPU build) serving the tiny local model.

Skipped unless CATO_VLLM_PYTHON and CATO_TINY_MODEL are set (see conftest.py).
"""

from __future__ import annotations

import statistics

import pytest

from .conftest import SERVED_NAME, get_text, post_json, stream_completion

pytestmark = pytest.mark.live

PROMPT_LEN = 32
OUTPUT_LEN = 16


def token_prompt(n: int, offset: int = 10) -> list[int]:
    """A prompt as a token-ID list: exact length, no tokenizer involved."""
    return [offset + (i % 1000) for i in range(n)]


def completion_payload(prompt_len=PROMPT_LEN, max_tokens=OUTPUT_LEN, **extra) -> dict:
    return {
        "model": SERVED_NAME,
        "prompt": token_prompt(prompt_len),
        "max_tokens": max_tokens,
        "ignore_eos": True,
        "temperature": 0.0,
        **extra,
    }


def test_models_lists_served_name(vllm_server, capsys):
    assert SERVED_NAME in get_text(vllm_server.url + "/v1/models")
    with capsys.disabled():
        print(
            f"\n[live] vLLM ready in {vllm_server.ready_seconds:.1f} s; warm-up request "
            f"{vllm_server.warmup_seconds * 1000:.0f} ms; log {vllm_server.log_path}"
        )


def test_streamed_completion_exact_token_counts(vllm_server, capsys):
    """Token-ID prompt + ignore_eos + include_usage: exact prompt and output lengths."""
    res = stream_completion(vllm_server.url + "/v1/completions", completion_payload())
    assert res["done"], "stream did not end with [DONE]"
    assert res["usage"] is not None, "no usage chunk despite include_usage"
    assert res["usage"]["completion_tokens"] == OUTPUT_LEN
    assert res["usage"]["prompt_tokens"] == PROMPT_LEN
    assert res["ttft"] is not None and 0 < res["ttft"] <= res["e2e"]
    # One streamed chunk per decode step (the detokenizer may hold back a few bytes).
    assert 1 <= len(res["chunks"]) <= OUTPUT_LEN
    finish = [c["choices"][0].get("finish_reason") for c in res["chunks"]]
    assert finish[-1] == "length"
    with capsys.disabled():
        print(
            f"\n[live] {PROMPT_LEN}+{OUTPUT_LEN} tokens, streamed: "
            f"TTFT {res['ttft'] * 1000:.1f} ms, E2E {res['e2e'] * 1000:.1f} ms"
        )


def test_streamed_latency_sequential(vllm_server, capsys):
    """Concurrency 1, a few requests: report median TTFT/E2E (asserts only sanity)."""
    ttfts, e2es = [], []
    for _ in range(8):
        res = stream_completion(vllm_server.url + "/v1/completions", completion_payload())
        assert res["usage"]["completion_tokens"] == OUTPUT_LEN
        ttfts.append(res["ttft"])
        e2es.append(res["e2e"])
    ttft, e2e = statistics.median(ttfts), statistics.median(e2es)
    with capsys.disabled():
        print(
            f"\n[live] concurrency 1, n=8, {PROMPT_LEN}+{OUTPUT_LEN} tokens: median TTFT "
            f"{ttft * 1000:.1f} ms, median E2E {e2e * 1000:.1f} ms "
            f"(max E2E {max(e2es) * 1000:.1f} ms)"
        )
    # Generous bound: a 2-layer, 128-wide model; busy CI machines are slower, not 100x.
    assert e2e < 5.0


def test_priority_field_accepted(vllm_server):
    """Started with --scheduling-policy priority, so a per-request priority is accepted."""
    for priority in (-5, 0, 7):
        body = post_json(vllm_server.url + "/v1/completions", completion_payload(max_tokens=4, priority=priority))
        assert body["usage"]["completion_tokens"] == 4
        assert body["usage"]["prompt_tokens"] == PROMPT_LEN


def test_chat_completion_uses_chat_template(vllm_server):
    body = post_json(
        vllm_server.url + "/v1/chat/completions",
        {
            "model": SERVED_NAME,
            "messages": [{"role": "user", "content": "def add(a, b):"}],
            "max_tokens": 8,
            "ignore_eos": True,
            "temperature": 0.0,
        },
    )
    assert body["usage"]["completion_tokens"] == 8
    assert body["choices"][0]["message"]["role"] == "assistant"


def test_metrics_exposes_scheduler_gauges(vllm_server):
    text = get_text(vllm_server.url + "/metrics")
    for name in ("vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:time_to_first_token_seconds"):
        assert name in text, f"{name} missing from /metrics"
