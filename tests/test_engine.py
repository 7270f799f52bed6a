"""Hand-computed engine timings on the round profile (10 ms a step + 1 ms a token)."""

from __future__ import annotations

import pandas as pd
import pytest

from cato_sim.experiment import parse_experiment
from cato_sim.simulation import Simulation


def run(tmp_path, profile_file, trace_rows, *, replicas=1, profile=None, model_over=None, router="round_robin"):
    exp = parse_experiment(
        {
            "trace": {"path": "unused.parquet"},
            "models": {
                "m": {"profile": str(profile_file(**(profile or {}))), "replicas": replicas, **(model_over or {})}
            },
            "task_types": {"gen": {"metric": "e2e", "sla": {"seconds": 10}, "nodes": [{"name": "llm", "kind": "llm"}]}},
            "setups": [{"name": "s", "router": router}],
        },
        "test",
    )
    trace = pd.DataFrame(trace_rows, columns=["task_id", "arrival_s", "task_type", "prompt_tokens", "output_tokens"])
    Simulation(exp, exp.setups[0], trace, tmp_path, seed=0).run()
    tasks = pd.read_parquet(tmp_path / "tasks.parquet").set_index("task_id")
    nodes = pd.read_parquet(tmp_path / "nodes.parquet").set_index("task_id")
    return tasks, nodes


def test_one_request_ttft_is_the_profiles_prefill(tmp_path, profile_file):
    tasks, _ = run(tmp_path, profile_file, [("a", 0.0, "gen", 100, 5)])
    assert tasks.loc["a", "ttft_s"] == pytest.approx(0.11)  # 10 ms + 100 x 1 ms
    assert tasks.loc["a", "e2e_s"] == pytest.approx(0.11 + 4 * 0.011)  # 4 decode steps of 1 token
    assert tasks.loc["a", "status"] == "ok" and tasks.loc["a", "met"]


def test_batch_of_two_shares_steps(tmp_path, profile_file):
    tasks, _ = run(tmp_path, profile_file, [("a", 0.0, "gen", 100, 3), ("b", 0.0, "gen", 100, 3)])
    # One prefill step of 200 tokens, then two decode steps of 2 sequences.
    assert list(tasks["ttft_s"]) == pytest.approx([0.21, 0.21])
    assert list(tasks["e2e_s"]) == pytest.approx([0.21 + 2 * 0.012] * 2)


def test_decode_attention_grows_with_context(tmp_path, profile_file):
    tasks, _ = run(
        tmp_path, profile_file, [("a", 0.0, "gen", 100, 3), ("b", 0.0, "gen", 100, 3)], profile={"decode_ctx_s": 1e-4}
    )
    # Decode steps read 2 x 101 then 2 x 102 context tokens.
    assert list(tasks["e2e_s"]) == pytest.approx([0.21 + 0.012 + 0.0202 + 0.012 + 0.0204] * 2)


def test_arrival_mid_decode_joins_at_next_step_boundary(tmp_path, profile_file):
    tasks, nodes = run(tmp_path, profile_file, [("a", 0.0, "gen", 100, 11), ("b", 0.15, "gen", 100, 3)])
    # a: prefill ends 0.11, decode steps every 11 ms; b arrives at 0.15 during the step that
    # ends at 0.154, joins there: a mixed step of 1 + 100 tokens (0.111 s) ends at 0.265.
    assert nodes.loc["b", "start_s"] == pytest.approx(0.154)
    assert tasks.loc["b", "ttft_s"] == pytest.approx(0.265 - 0.15)
    # Two decode steps of two sequences finish b; a has 3 tokens left at 11 ms each.
    assert tasks.loc["b", "e2e_s"] == pytest.approx(0.289 - 0.15)
    assert tasks.loc["a", "e2e_s"] == pytest.approx(0.289 + 3 * 0.011)


def test_per_seq_cost_is_paid_by_every_sequence_that_gets_a_token(tmp_path, profile_file):
    tasks, nodes = run(
        tmp_path, profile_file, [("a", 0.0, "gen", 100, 11), ("b", 0.15, "gen", 100, 3)], profile={"per_seq_s": 0.002}
    )
    # a: prefill 0.11 + 2 ms (one sequence) = 0.112, then decode steps of 11 + 2 ms; b arrives
    # at 0.15 during a's third step (0.138-0.151), joins at 0.151: a mixed step of 101 tokens
    # where both a and b get a token, 0.111 + 2 x 2 ms = 0.115, ends at 0.266.
    assert nodes.loc["b", "start_s"] == pytest.approx(0.151)
    assert tasks.loc["b", "ttft_s"] == pytest.approx(0.266 - 0.15)
    # Two decode steps of two sequences, 12 + 4 ms each, finish b; a has made 7 of its 11
    # tokens (one a step from 0.112), 4 left at 13 ms.
    assert tasks.loc["b", "e2e_s"] == pytest.approx(0.298 - 0.15)
    assert tasks.loc["a", "e2e_s"] == pytest.approx(0.298 + 4 * 0.013)


def test_a_request_reaching_a_busy_engine_costs_it_the_front_end_time(tmp_path, profile_file):
    tasks, nodes = run(
        tmp_path,
        profile_file,
        [("a", 0.0, "gen", 100, 11), ("b", 0.15, "gen", 100, 3)],
        profile={"frontend_cpu_s": 0.005},
    )
    # a reaches an idle engine: nothing to share, its prefill is the profile's (0.11 s)
    assert tasks.loc["a", "ttft_s"] == pytest.approx(0.11)
    # b arrives at 0.15 during a's step that ends at 0.154 and is admitted there; the engine
    # then runs b's 5 ms of front end and the mixed step (0.111 s) to 0.270
    assert nodes.loc["b", "start_s"] == pytest.approx(0.154)
    assert tasks.loc["b", "ttft_s"] == pytest.approx(0.270 - 0.15)
    # two decode steps of two sequences finish b at 0.294; a, 8 of 11 tokens made, has 3 left
    assert tasks.loc["b", "e2e_s"] == pytest.approx(0.294 - 0.15)
    assert tasks.loc["a", "e2e_s"] == pytest.approx(0.294 + 3 * 0.011)


def test_front_ends_are_paid_before_the_step_their_requests_join(tmp_path, profile_file):
    tasks, nodes = run(
        tmp_path,
        profile_file,
        [("a", 0.0, "gen", 100, 11), ("b", 0.15, "gen", 100, 3), ("c", 0.16, "gen", 100, 2)],
        profile={"frontend_cpu_s": 0.02},
    )
    # b arrives during a's step that ends at 0.154, joins the batch there and its 20 ms of front
    # end run to 0.174, then its mixed step of 1 + 100 tokens (0.111 s) to 0.285. c arrives
    # meanwhile and joins at the next boundary: its front end does not hold up b's step.
    assert nodes.loc["b", "start_s"] == pytest.approx(0.154)
    assert tasks.loc["b", "ttft_s"] == pytest.approx(0.285 - 0.15)
    # then c is admitted, its front end runs to 0.305, and its mixed step of 2 + 100 tokens
    # (0.112 s) to 0.417
    assert nodes.loc["c", "start_s"] == pytest.approx(0.285)
    assert tasks.loc["c", "ttft_s"] == pytest.approx(0.417 - 0.16)
    # one decode step of three sequences (13 ms) ends b and c; a, 8 of 11 tokens made, has 3 left
    assert tasks.loc["b", "e2e_s"] == pytest.approx(0.430 - 0.15)
    assert tasks.loc["c", "e2e_s"] == pytest.approx(0.430 - 0.16)
    assert tasks.loc["a", "e2e_s"] == pytest.approx(0.430 + 3 * 0.011)


def test_a_call_waiting_for_a_slot_pays_its_front_end_when_admitted(tmp_path, profile_file):
    tasks, nodes = run(
        tmp_path,
        profile_file,
        [("a", 0.0, "gen", 100, 3), ("b", 0.05, "gen", 100, 3), ("c", 0.06, "gen", 100, 2)],
        profile={"frontend_cpu_s": 0.02},
        model_over={"max_num_seqs": 2},
    )
    # a's prefill ends at 0.11, where b joins it: b's front end runs to 0.13, then the mixed
    # step of 1 + 100 tokens (0.111 s) to 0.241. c finds both slots taken and costs nothing yet
    # (CATO's gateway has not sent it to the replica).
    assert nodes.loc["b", "start_s"] == pytest.approx(0.11)
    assert tasks.loc["b", "ttft_s"] == pytest.approx(0.241 - 0.05)
    # a's last token: a decode step of two sequences (12 ms), at 0.253
    assert tasks.loc["a", "e2e_s"] == pytest.approx(0.253)
    # c takes a's slot there: its front end to 0.273, its mixed step beside b's decode to 0.384
    assert nodes.loc["c", "start_s"] == pytest.approx(0.253)
    assert tasks.loc["c", "ttft_s"] == pytest.approx(0.384 - 0.06)
    assert tasks.loc["b", "e2e_s"] == pytest.approx(0.384 - 0.05)  # b's third token came with c's first
    assert tasks.loc["c", "e2e_s"] == pytest.approx(0.384 + 0.011 - 0.06)


def test_chunked_prefill_splits_long_prompts(tmp_path, profile_file):
    tasks, _ = run(tmp_path, profile_file, [("a", 0.0, "gen", 300, 1)], model_over={"max_num_batched_tokens": 128})
    # 128 + 128 + 44 tokens in three steps.
    assert tasks.loc["a", "ttft_s"] == pytest.approx(3 * 0.01 + 0.3)
    # only the last chunk gives the prompt its token: one per-sequence cost, not three
    tasks, _ = run(
        tmp_path,
        profile_file,
        [("a", 0.0, "gen", 300, 1)],
        model_over={"max_num_batched_tokens": 128},
        profile={"per_seq_s": 0.002},
    )
    assert tasks.loc["a", "ttft_s"] == pytest.approx(3 * 0.01 + 0.3 + 0.002)


def test_max_num_seqs_queues_the_rest(tmp_path, profile_file):
    tasks, nodes = run(
        tmp_path, profile_file, [("a", 0.0, "gen", 100, 2), ("b", 0.0, "gen", 100, 2)], model_over={"max_num_seqs": 1}
    )
    # b waits for a: a ends at 0.11 + 0.011; then b's prefill and decode step.
    assert nodes.loc["b", "start_s"] == pytest.approx(0.121)
    assert tasks.loc["b", "e2e_s"] == pytest.approx(0.121 + 0.11 + 0.011)


def test_request_larger_than_kv_cache_fails_with_reason(tmp_path, profile_file):
    tasks, _ = run(
        tmp_path,
        profile_file,
        [("a", 0.0, "gen", 100, 5), ("b", 0.0, "gen", 10, 5)],
        profile={"kv_capacity_tokens": 50},
    )
    assert tasks.loc["a", "status"] == "failed" and "KV" in tasks.loc["a", "error"]
    assert tasks.loc["b", "status"] == "ok" and not tasks.loc["a", "met"]


def test_events_per_request_do_not_grow_with_output_length(tmp_path, profile_file):
    """Decode runs advance to the next finish in one event, whatever the output length.

    Twenty requests in two waves: the second wave cuts the first one's decode run; then one
    run per finishing request. Same pattern at 10 or 100,000 output tokens, same events."""
    from cato_sim.experiment import parse_experiment

    def events(output):
        exp = parse_experiment(
            {
                "trace": {"path": "unused.parquet"},
                "models": {"m": {"profile": str(profile_file(kv_capacity_tokens=10**9)), "replicas": 2}},
                "setups": [{"name": "s", "router": "cato"}],
                "drain_s": 1e9,
            },
            "test",
        )
        trace = pd.DataFrame(
            {
                "task_id": [f"t{i}" for i in range(20)],
                "arrival_s": [0.0] * 10 + [0.001] * 10,
                "task_type": ["generation"] * 20,
                "prompt_tokens": [50] * 20,
                "output_tokens": [output + i for i in range(20)],
            }
        )
        sim = Simulation(exp, exp.setups[0], trace, tmp_path / str(output), seed=0)
        sim.run()
        assert (pd.read_parquet(tmp_path / str(output) / "tasks.parquet")["status"] == "ok").all()
        return next(sim.env._eid)

    assert events(10) == events(1000) == events(100_000)  # 10,000x the decode steps


def test_a_replica_still_draining_after_the_timeout_is_force_stopped(tmp_path, profile_file):
    """Ray kills a replica still draining after graceful_shutdown_timeout_s: what it runs and
    what it queues fail then, and the replica is released then (the simulator's stop)."""
    exp = parse_experiment(
        {
            "trace": {"path": "unused.parquet"},
            "models": {"m": {"profile": str(profile_file()), "replicas": 1, "max_num_seqs": 1}},
            "task_types": {"gen": {"metric": "e2e", "sla": {"seconds": 60}, "nodes": [{"name": "llm", "kind": "llm"}]}},
            "setups": [
                {
                    "name": "s",
                    "router": "round_robin",
                    "scaler": "rayserve",
                    "scaler_params": {"min_replicas": 0, "graceful_shutdown_timeout_s": 5.0},
                }
            ],
        },
        "test",
    )
    # a runs 0.11 + 999 x 0.011 s = 11.1 s; b waits in the replica's queue behind it
    trace = pd.DataFrame(
        [("a", 0.0, "gen", 100, 1000), ("b", 0.0, "gen", 100, 5)],
        columns=["task_id", "arrival_s", "task_type", "prompt_tokens", "output_tokens"],
    )
    sim = Simulation(exp, exp.setups[0], trace, tmp_path, seed=0)
    sim.start()
    sim.env.run(until=1.0)
    pool = sim.pools["m"]
    (k,) = pool.ready
    assert (k.running, k.queued) == (1, 1)
    pool.release(k, 1.0)  # draining from 1 s: the stop comes at 6 s, before a could finish
    sim.env.run(until=sim.stop)
    sim.finish()
    tasks = pd.read_parquet(tmp_path / "tasks.parquet").set_index("task_id")
    nodes = pd.read_parquet(tmp_path / "nodes.parquet").set_index("task_id")
    replicas = pd.read_parquet(tmp_path / "replicas.parquet")
    assert list(tasks["status"]) == ["failed", "failed"]
    assert (nodes["end_s"] == 6.0).all() and (nodes["status"] == "failed").all()
    assert tasks["error"].str.contains("replica m-1 was force-stopped while draining").all()
    assert nodes.loc["a", "first_token_s"] == pytest.approx(0.11) and pd.isna(nodes.loc["b", "start_s"])
    stopped = replicas.set_index("replica_id").loc["m-1"]  # (the scaler asked for m-2 meanwhile)
    assert (stopped["released_s"], stopped["busy_s"], stopped["requests"]) == (6.0, 6.0, 2)
