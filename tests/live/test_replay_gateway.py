"""`cato-live replay --deploy DEPLOY.yaml`: the CATO gateway in-process (cato_live.gateway.app)
in front of two emulated replicas (EmulatorProvisioner): the replay's tables take replica,
priority and routing times from the gateway, and replicas.parquet is the gateway's."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from cato_traces.files import write_trace

from .test_emulator import PROFILE
from .test_replay_vllm import check_complete_run, load, poisson_trace, run_replay

pytestmark = pytest.mark.live


def test_replay_deploy_gateway_over_emulators(tmp_path):
    deploy = {
        "router": "cato",
        "scaler": "fixed",
        "models": {"emu": {"profile": PROFILE, "replicas": 2, "max_num_seqs": 8, "priority_scheduling": True}},
        "provisioner": {"kind": "emulator", "log_dir": str(tmp_path / "logs")},
    }
    (tmp_path / "deploy.yaml").write_text(yaml.safe_dump(deploy))
    trace = poisson_trace(20, rate=4.0, seed=11)
    write_trace(trace, tmp_path / "trace.parquet")
    res = run_replay(tmp_path / "trace.parquet", "--deploy", tmp_path / "deploy.yaml", "--out", tmp_path / "out")
    assert res.returncode == 0, res.stderr
    _, nodes, replicas, summary = load(tmp_path / "out")
    target = summary["config"]["target"]
    assert target.startswith("http://127.0.0.1:") and summary["replicas_from"] == "gateway"

    llm = nodes[nodes["kind"] == "llm"]
    assert set(llm["replica"]) == {"emu-1", "emu-2"}  # X-CATO-Replica: the cato router used both
    assert set(llm["priority"]) <= {0, 1, 2} and llm["priority"].notna().all()  # X-CATO-Priority
    # The gateway's records, on the replay's clock: routed after sent, sent on before the first token.
    assert llm["predicted_wait_s"].notna().all() and (llm["wait_s"] >= 0).all()
    assert np.allclose(llm["wait_s"], llm["start_s"] - llm["queued_s"], rtol=0, atol=1e-9)
    assert (llm["start_s"] < llm["first_token_s"]).all()
    assert np.allclose(llm["slack_s"], llm["deadline_s"] - llm["queued_s"], rtol=0, atol=1e-9)

    assert sorted(replicas["replica_id"]) == ["emu-1", "emu-2"] and replicas["released_s"].notna().all()
    assert replicas["requests"].sum() == len(llm) and (replicas["busy_s"] > 0).all()
    assert (replicas["busy_s"] <= replicas["released_s"] - replicas["asked_s"]).all()
    check_complete_run(trace, tmp_path / "out", target, "emu", gateway=True)
