"""Whatever the trace and the policies: no task lost or duplicated, time never runs backwards,
and the same seed gives byte-identical results."""

from __future__ import annotations

from itertools import pairwise

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cato_sim.experiment import parse_experiment
from cato_sim.simulation import Simulation

TYPES = ["completion", "generation", "summarization", "translation"]

task = st.tuples(
    st.floats(0, 20, allow_nan=False),
    st.sampled_from(TYPES),
    st.integers(1, 3000),
    st.integers(1, 400),
)


def experiment(router, scaler, replicas=1, **model):
    return parse_experiment(
        {
            "trace": {"path": "unused.parquet"},
            "cluster": {"machines": 1, "accelerators_per_machine": 3},
            "models": {
                "m": {
                    "profile": "codellama-7b_a100",
                    "replicas": replicas,
                    "max_num_seqs": 4,
                    "max_num_batched_tokens": 512,
                    "kv_capacity_tokens": 4000,
                    **model,
                }
            },
            "setups": [
                {
                    "name": "s",
                    "router": router,
                    "scaler": scaler,
                    "scaler_params": {"window_s": 0.5, "max_exceeded_times": 1, "idle_timeout_s": 1}
                    if scaler == "cato"
                    else {"upscale_delay_s": 0.5, "downscale_delay_s": 2}
                    if scaler == "rayserve"
                    else {},
                }
            ],
            "drain_s": 30,
        },
        "test",
    )


def frame(tasks):
    return (
        pd.DataFrame(
            [(f"t{i}", a, ty, p, o) for i, (a, ty, p, o) in enumerate(tasks)],
            columns=["task_id", "arrival_s", "task_type", "prompt_tokens", "output_tokens"],
        )
        .sort_values("arrival_s", kind="stable")
        .reset_index(drop=True)
    )


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    tasks=st.lists(task, min_size=1, max_size=40),
    router=st.sampled_from(["cato", "pow2", "round_robin"]),
    scaler=st.sampled_from(["cato", "rayserve", "fixed"]),
    replicas=st.integers(0, 2),
)
def test_every_task_once_and_time_runs_forward(tmp_path_factory, tasks, router, scaler, replicas):
    out = tmp_path_factory.mktemp("run")
    exp = experiment(router, scaler, replicas)
    trace = frame(tasks)
    Simulation(exp, exp.setups[0], trace, out, seed=3).run()
    done = pd.read_parquet(out / "tasks.parquet")
    nodes = pd.read_parquet(out / "nodes.parquet")
    reps = pd.read_parquet(out / "replicas.parquet")

    assert sorted(done["task_id"]) == sorted(trace["task_id"])  # each exactly once
    assert set(done["status"]) <= {"ok", "failed", "timeout"}
    assert not done["met"][done["status"] != "ok"].any()
    ok = done[done["status"] == "ok"]
    assert (ok["ttft_s"] >= 0).all() and (ok["e2e_s"] >= ok["ttft_s"]).all()

    # Within a node: queued <= start <= first token <= end, where they happened.
    seq = nodes[["queued_s", "start_s", "first_token_s", "end_s"]]
    for a, b in pairwise(seq.columns):
        both = seq[a].notna() & seq[b].notna()
        assert (seq.loc[both, a] <= seq.loc[both, b] + 1e-9).all()
    arrival = nodes["task_id"].map(trace.set_index("task_id")["arrival_s"])
    assert (nodes["queued_s"] >= arrival - 1e-9).all()
    # Across nodes: a node is queued only after the node it runs after has ended.
    by = nodes.set_index(["task_id", "node"])
    for (tid, node), row in by.iterrows():
        prev = {"llm": "retrieve", "validate": "llm"}.get(node)
        if (tid, prev) in by.index:
            assert row["queued_s"] >= by.loc[(tid, prev), "end_s"] - 1e-9
    # Replicas: asked <= ready <= released; busy time within provisioned time.
    assert (reps["asked_s"] <= reps["released_s"] + 1e-9).all()
    r = reps.dropna(subset=["ready_s"])
    assert (r["asked_s"] <= r["ready_s"]).all() and (r["ready_s"] <= r["released_s"] + 1e-9).all()
    assert (reps["busy_s"] <= reps["released_s"] - reps["asked_s"] + 1e-6).all()


def test_same_seed_gives_identical_results(tmp_path):
    from cato_traces.generate import generate_trace

    trace = generate_trace(rate=4, duration_s=30, mix=dict.fromkeys(TYPES, 1), seed=5)
    outs = []
    for run in range(2):
        for router, scaler in (("cato", "cato"), ("pow2", "rayserve")):
            exp = experiment(router, scaler, replicas=1)
            out = tmp_path / f"{router}{run}"
            Simulation(exp, exp.setups[0], trace, out, seed=11).run()
            outs.append(out)
    for a, b in ((outs[0], outs[2]), (outs[1], outs[3])):
        for name in ("tasks.parquet", "nodes.parquet", "replicas.parquet"):
            assert (a / name).read_bytes() == (b / name).read_bytes()
    # And the policies did differ, so the comparison above is not vacuous.
    assert (outs[0] / "nodes.parquet").read_bytes() != (outs[1] / "nodes.parquet").read_bytes()


def test_two_simulations_side_by_side_do_not_share_state(tmp_path):
    from cato_traces.generate import generate_trace

    trace = generate_trace(rate=4, duration_s=20, mix=dict.fromkeys(TYPES, 1), seed=2)
    exp = experiment("pow2", "cato", replicas=1)
    Simulation(exp, exp.setups[0], trace, tmp_path / "alone", seed=1).run()
    a = Simulation(exp, exp.setups[0], trace, tmp_path / "a", seed=1)
    b = Simulation(exp, exp.setups[0], trace, tmp_path / "b", seed=9)
    a.start()
    b.start()
    while not (a.stop.processed and b.stop.processed):  # interleave the two event loops
        for sim in (a, b):
            if not sim.stop.processed:
                sim.env.step()
    a.finish()
    b.finish()
    assert (tmp_path / "alone/tasks.parquet").read_bytes() == (tmp_path / "a/tasks.parquet").read_bytes()
    assert (tmp_path / "a/tasks.parquet").read_bytes() != (tmp_path / "b/tasks.parquet").read_bytes()


def test_a_run_leaves_the_garbage_collector_as_it_found_it(tmp_path):
    """Simulation.run pauses Python's cyclic collector for speed; afterwards it is back on,
    or still off if the caller had turned it off."""
    import gc

    exp = experiment("cato", "fixed", replicas=1)
    trace = frame([(0.0, "completion", 50, 5), (0.1, "completion", 60, 5)])
    seen = []
    sim = Simulation(
        exp, exp.setups[0], trace, tmp_path / "on", seed=0, on_task_done=lambda: seen.append(gc.isenabled())
    )
    assert gc.isenabled()
    sim.run()
    assert seen == [False, False] and gc.isenabled()
    gc.disable()
    try:
        Simulation(exp, exp.setups[0], trace, tmp_path / "off", seed=0).run()
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_a_slower_engine_takes_longer_while_the_policies_keep_the_profile(tmp_path):
    # One generation task alone on one replica: with engine_slowdown 2 its LLM call's TTFT
    # (taken to first token) and decode take exactly twice the profile's isolated times;
    # its deadline and the task's SLA, set from the profile, stay as they were.
    import pyarrow.parquet as pq

    from cato_core.profile import load_profile

    p = load_profile("codellama-7b_a100")
    trace = frame([(0.0, "generation", 500, 40)])
    nodes, tasks = {}, {}
    for slowdown in (1.0, 2.0):
        exp = experiment("cato", "fixed", engine_slowdown=slowdown)
        out = tmp_path / str(slowdown)
        Simulation(exp, exp.setups[0], trace, out, seed=1).run()
        nodes[slowdown] = pq.read_table(out / "nodes.parquet").to_pylist()
        tasks[slowdown] = pq.read_table(out / "tasks.parquet").to_pylist()
    (llm,) = [n for n in nodes[2.0] if n["kind"] == "llm"]
    assert llm["first_token_s"] - llm["start_s"] == pytest.approx(2 * p.prefill_s(500), rel=1e-12)
    assert llm["end_s"] - llm["first_token_s"] == pytest.approx(2 * p.decode_s(500, 40), rel=1e-12)
    (same,) = [n for n in nodes[1.0] if n["kind"] == "llm"]
    assert llm["deadline_s"] == same["deadline_s"] and llm["predicted_wait_s"] == same["predicted_wait_s"]
    assert tasks[2.0][0]["sla_s"] == tasks[1.0][0]["sla_s"]
