"""The emulator (`python -m cato_emulator.server`), started by EmulatorProvisioner as real
subprocesses: vLLM's API and formats, timings from the device profile, batching limits,
priority order, errors. No vLLM needed.

Timing tolerance: a response can never be early (the client's clock starts before the
server's, and the emulator delivers an event only once the wall clock has reached it), so
the lower bound is the profile's time. Late by: the loop timer's resolution (1 ms, epoll),
HTTP and JSON on both sides (about 1-2 ms measured on an idle 2-core machine), and being
scheduled late on 2 cores shared with a vLLM and other tests: we allow LATE_S = 40 ms on
durations stretched to 0.1-1 s by --time-scale 5.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time

import pytest

from cato_core.profile import load_profile
from cato_live.provisioners.emulator import EmulatorProvisioner, EmulatorSpec

from .conftest import ROOT, _request, get_text, post_json, stream_completion

pytestmark = pytest.mark.live
PROFILE = "codellama-7b_a100"
SCALE = 5.0
LATE_S = 0.040


class Emulators:
    """An EmulatorProvisioner on its own event loop, for synchronous tests."""

    def __init__(self, models, **options):
        self.loop = asyncio.new_event_loop()
        self.prov = EmulatorProvisioner(models=models, options=options)
        self.handles = {}

    def start(self, model, replica_id):
        h = self.loop.run_until_complete(self.prov.start(model, replica_id))
        self.handles[replica_id] = h
        return h

    def stop(self, replica_id):
        self.loop.run_until_complete(self.prov.stop(self.handles.pop(replica_id)))

    def close(self):
        try:
            self.loop.run_until_complete(self.prov.close())
        finally:
            self.loop.close()


@pytest.fixture(scope="module")
def emulators(tmp_path_factory):
    emus = Emulators(
        {
            "emu": EmulatorSpec(profile=PROFILE, time_scale=SCALE),
            "emu1": EmulatorSpec(profile=load_profile(PROFILE), max_num_seqs=1, time_scale=SCALE, max_model_len=4096),
        },
        log_dir=str(tmp_path_factory.mktemp("emulator-logs")),
    )
    try:
        emus.start("emu", "emu-1")
        emus.start("emu1", "emu1-1")
        yield emus
    finally:
        emus.close()


def url(emulators, rid="emu-1"):
    return emulators.handles[rid].base_url


def payload(model, prompt=64, out=16, **extra):
    return {"model": model, "prompt": list(range(10, 10 + prompt)), "max_tokens": out, "ignore_eos": True, **extra}


@pytest.mark.parametrize("prompt,out", [(64, 16), (512, 8), (1500, 1)])
def test_one_request_alone_matches_the_profile(emulators, prompt, out, capsys):
    """Alone on a replica: TTFT = prefill_s(prompt) and E2E = prefill + decode_s, times SCALE."""
    prof = load_profile(PROFILE)
    ttft_expect = prof.prefill_s(prompt) * SCALE
    e2e_expect = (prof.prefill_s(prompt) + prof.decode_s(prompt, out)) * SCALE
    res = stream_completion(url(emulators) + "/v1/completions", payload("emu", prompt, out))
    assert res["done"] and res["usage"] == {
        "prompt_tokens": prompt,
        "total_tokens": prompt + out,
        "completion_tokens": out,
    }
    assert ttft_expect <= res["ttft"] <= ttft_expect + LATE_S, (res["ttft"], ttft_expect)
    assert e2e_expect <= res["e2e"] <= e2e_expect + LATE_S, (res["e2e"], e2e_expect)
    texts = [c["choices"][0]["text"] for c in res["chunks"]]
    assert "".join(texts) == " tok" * out and len(texts) == min(out, 2)  # first token, then the rest
    assert res["chunks"][-1]["choices"][0]["finish_reason"] == "length"
    with capsys.disabled():
        print(
            f"\n[emulator] {prompt}+{out}: TTFT late by {(res['ttft'] - ttft_expect) * 1000:.1f} ms, "
            f"E2E late by {(res['e2e'] - e2e_expect) * 1000:.1f} ms"
        )


def _concurrent(fn, args_list, gap_s=0.0):
    """Runs fn(*args) in a thread per args, started ``gap_s`` apart. Returns the threads, their
    results, and when each call returned, in seconds since the first thread started (one
    clock for all: a thread may start sending a few ms late on a loaded machine)."""
    results, ends = [None] * len(args_list), [None] * len(args_list)
    t0 = time.perf_counter()

    def run(i, args):
        results[i] = fn(*args)
        ends[i] = time.perf_counter() - t0

    threads = []
    for i, args in enumerate(args_list):
        th = threading.Thread(target=run, args=(i, args))
        th.start()
        threads.append(th)
        time.sleep(gap_s)
    return threads, results, ends


def metric(text: str, name: str) -> float:
    return next(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{"))


def test_max_num_seqs_queues_and_metrics_show_it(emulators):
    """max_num_seqs 1: three requests at once run one after another (E2E T, 2T, 3T); while
    they run /metrics shows 1 running and 2 waiting."""
    prof = load_profile(PROFILE)
    one = (prof.prefill_s(256) + prof.decode_s(256, 16)) * SCALE
    target = url(emulators, "emu1-1") + "/v1/completions"
    threads, _, ends = _concurrent(stream_completion, [(target, payload("emu1", 256, 16))] * 3)
    time.sleep(one / 2)
    text = get_text(url(emulators, "emu1-1") + "/metrics")
    for th in threads:
        th.join(60)
    assert metric(text, "vllm:num_requests_running") == 1 and metric(text, "vllm:num_requests_waiting") == 2
    # Served one at a time from the first send: the k-th ends k x T after it, never earlier.
    for k, got in enumerate(sorted(ends), start=1):
        assert k * one - 0.005 <= got <= k * one + LATE_S, (k, got, one)
    text = get_text(url(emulators, "emu1-1") + "/metrics")
    assert metric(text, "vllm:num_requests_running") == 0 and metric(text, "vllm:num_requests_waiting") == 0


def test_priority_orders_the_queue(emulators):
    """A runs; then B (priority 5) and C (priority 1) queue: C is served before B."""
    target = url(emulators, "emu1-1") + "/v1/completions"
    args = [(target, payload("emu1", 256, 16, priority=p)) for p in (0, 5, 1)]
    threads, _, end_s = _concurrent(stream_completion, args, gap_s=0.05)
    for th in threads:
        th.join(60)
    ends = dict(zip("ABC", end_s, strict=True))
    assert ends["A"] < ends["C"] < ends["B"], ends


def test_non_streamed_and_chat(emulators):
    body = post_json(url(emulators) + "/v1/completions", payload("emu", 20, 5))
    assert body["object"] == "text_completion" and body["choices"][0]["text"] == " tok" * 5
    assert body["usage"] == {"prompt_tokens": 20, "total_tokens": 25, "completion_tokens": 5}
    res = stream_completion(
        url(emulators) + "/v1/chat/completions",
        {"model": "emu", "messages": [{"role": "user", "content": "x" * 40}], "max_tokens": 3},
    )
    assert res["chunks"][0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}  # as vLLM: role first
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in res["chunks"]) == " tok" * 3
    assert res["usage"] == {"prompt_tokens": 10, "total_tokens": 13, "completion_tokens": 3}  # 4 chars a token


def test_models_health_and_errors(emulators):
    models = json.loads(get_text(url(emulators) + "/v1/models"))
    assert [m["id"] for m in models["data"]] == ["emu"]
    assert get_text(url(emulators) + "/health") == ""
    with pytest.raises(AssertionError, match=r"HTTP 404: .*The model `nope` does not exist"):
        post_json(url(emulators) + "/v1/completions", payload("nope"))
    with pytest.raises(AssertionError, match=r"HTTP 400: .*maximum context length is 4096 tokens"):
        post_json(url(emulators, "emu1-1") + "/v1/completions", payload("emu1", 4000, 200))
    with pytest.raises(AssertionError, match=r"HTTP 400: .*prompt must be"):
        post_json(url(emulators) + "/v1/completions", {"model": "emu", "prompt": [], "max_tokens": 2})
    with pytest.raises(AssertionError, match=r"HTTP 400: .*max_tokens must be an integer >= 1"):
        post_json(url(emulators) + "/v1/completions", payload("emu", out=0))


def test_provisioner_stop_and_capacity(emulators, tmp_path):
    emus = Emulators({"m": EmulatorSpec(profile=PROFILE)}, max_replicas=1, log_dir=str(tmp_path))
    try:
        assert emus.prov.capacity("m") == 1 and emus.prov.capacity("other") == 0
        h = emus.start("m", "m-1")
        assert emus.prov.capacity("m") == 0 and h.served_model == "m" and h.meta["ready_s"] > 0
        with pytest.raises(RuntimeError, match="no room"):
            emus.start("m", "m-2")
        pid = h.meta["pid"]
        emus.stop("m-1")
        assert subprocess.run(["kill", "-0", str(pid)], capture_output=True).returncode != 0  # gone
        with pytest.raises(ConnectionError):
            _request("GET", h.base_url + "/health", timeout=2)
    finally:
        emus.close()


def test_emulator_bad_profile_one_line_exit_2(tmp_path):
    res = subprocess.run(
        [sys.executable, "-m", "cato_emulator.server", "--profile", str(tmp_path / "no.yaml"), "--port", "0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 2
    assert res.stderr.strip() == f"error: {tmp_path / 'no.yaml'}: profile: an existing profile YAML file"
