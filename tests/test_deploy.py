"""DEPLOY.yaml: the shipped examples load, defaults, and one clear line for each kind of bad input."""

from __future__ import annotations

import pytest
import yaml
from typer.testing import CliRunner

from cato_core.errors import InputError
from cato_live.cli import app
from cato_live.deploy import PROVISIONER_KINDS, load_deploy, parse_deploy
from cato_live.provisioners import registry
from cato_live.provisioners.registry import make_provisioner
from tests.conftest import ROOT

EXAMPLES = sorted((ROOT / "experiments" / "deploy").glob("*.yaml"))
STATIC = {"kind": "static", "models": {"m": ["http://127.0.0.1:8001"]}}


def tree(**over) -> dict:
    t = {"models": {"m": {"profile": "codellama-7b_a100"}}, "provisioner": dict(STATIC)}
    t.update(over)
    return t


def error(t, source="d.yaml") -> str:
    with pytest.raises(InputError) as e:
        parse_deploy(t, source)
    return str(e.value)


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_shipped_examples_load(path):
    d = load_deploy(path)
    assert d.provisioner.kind == path.stem.split("_")[0]
    assert d.host == "127.0.0.1"
    for m in d.models:
        assert d.profile(m).step_s(1, 1, 0, 1) > 0


def test_examples_cover_every_provisioner_kind():
    assert {load_deploy(p).provisioner.kind for p in EXAMPLES} == set(registry.KINDS)


def test_registry_has_a_class_for_every_kind_the_schema_allows():
    assert set(registry.KINDS) == set(PROVISIONER_KINDS)


def test_a_deploy_file_or_its_profile_that_is_not_text_is_one_clear_error(tmp_path):
    bad = tmp_path / "d.yaml"
    bad.write_bytes("models: {}\n".encode("utf-16"))
    with pytest.raises(InputError) as e:
        load_deploy(bad)
    assert str(e.value) == f"{bad}: deploy: a UTF-8 YAML text file (byte 0xff at offset 0 is not UTF-8)"
    (tmp_path / "p.yaml").write_bytes(b"\x89PNG\r\n\x1a\n")
    bad.write_text(yaml.safe_dump(tree(models={"m": {"profile": "p.yaml"}})))
    with pytest.raises(InputError) as e:
        load_deploy(bad)
    assert str(e.value) == (
        f"{bad}: models.m.profile: a UTF-8 YAML text file (byte 0x89 at offset 0 is not UTF-8) ({tmp_path / 'p.yaml'})"
    )


def test_defaults():
    d = parse_deploy(tree(), "d.yaml")
    assert (d.host, d.port, d.token, d.max_body_bytes) == ("127.0.0.1", 8000, None, 1 << 20)
    assert (d.router, d.scaler, d.default_model, d.default_task_type) == ("cato", "fixed", "m", None)
    spec = d.models["m"]
    assert (spec.max_num_seqs, spec.replicas, spec.priority_scheduling) == (256, 1, False)
    assert (spec.request_timeout_s, spec.first_byte_timeout_s, spec.connect_timeout_s) == (300.0, 60.0, 5.0)
    assert d.served_name("m") == "m" and d.profile("m").name == "codellama-7b_a100"
    assert sorted(d.task_types) == ["completion", "generation", "summarization", "translation"]
    assert (d.retry.max_attempts, d.retry.past_deadline) == (3, False)


def test_task_type_overrides_merge_over_the_defaults():
    d = parse_deploy(tree(task_types={"completion": {"sla": {"seconds": 0.5}}, "translation": None}), "d.yaml")
    assert d.task_types["completion"].sla.seconds == 0.5
    assert [n.name for n in d.task_types["completion"].nodes] == ["retrieve", "llm"]  # kept from the default
    assert "translation" not in d.task_types


def test_profile_path_is_relative_to_the_deploy_file(tmp_path, profile_file):
    path = profile_file()
    (tmp_path / "deploy.yaml").write_text(yaml.safe_dump(tree(models={"m": {"profile": path.name}})))
    assert load_deploy(tmp_path / "deploy.yaml").profile("m").name == "round"


INLINE = {
    "name": "x",
    "model": "m",
    "device": "cpu",
    "overhead_s": 0.01,
    "per_token_s": 0.001,
    "prefill_attn_s": 0,
    "decode_ctx_s": 0,
    "kv_capacity_tokens": 1000,
    "cold_start_s": 1,
}


def test_inline_profile():
    inline = INLINE
    assert parse_deploy(tree(models={"m": {"profile": inline}}), "d.yaml").profile("m").overhead_s == 0.01


@pytest.mark.parametrize(
    "over, message",
    [
        ({"models": {}}, "d.yaml: (top level): at least one model is needed"),
        (
            {"router": "fastest"},
            "d.yaml: (top level): unknown router 'fastest'; expected one of ['cato', 'pow2', 'round_robin']",
        ),
        (
            {"scaler": "magic"},
            "d.yaml: (top level): unknown scaler 'magic'; expected one of ['cato', 'fixed', 'rayserve']",
        ),
        (
            {"router": "pow2", "router_params": {"max_ongoing": 3}},
            "d.yaml: router_params.max_ongoing: Extra inputs are not permitted",
        ),
        (
            {"scaler": "cato", "scaler_params": {"window_s": -1}},
            "d.yaml: scaler_params.window_s: Input should be greater than 0",
        ),
        ({"port": 70000}, "d.yaml: port: Input should be less than or equal to 65535"),
        ({"colour": "blue"}, "d.yaml: colour: Extra inputs are not permitted"),
        (
            {"provisioner": {"kind": "kubernetes"}},
            "d.yaml: provisioner: unknown provisioner kind 'kubernetes'; expected one of "
            "['emulator', 'process', 'ray', 'static']",
        ),
        ({"default_model": "x"}, "d.yaml: (top level): default_model 'x' is not among models ['m']"),
        (
            {"default_task_type": "poetry"},
            "d.yaml: (top level): default_task_type 'poetry' is not among "
            "task_types ['completion', 'generation', 'summarization', 'translation']",
        ),
        (
            {"tools": {"compile": 1.0}},
            "d.yaml: (top level): tools: 'compile' is no tool node of any task type ['retrieve', 'validate']",
        ),
        ({"tools": {"retrieve": 0}}, "d.yaml: tools.retrieve: Input should be greater than 0"),
        (
            {"task_types": {"generation": {"model": "other"}}},
            "d.yaml: (top level): task type 'generation' node 'llm' uses unknown model 'other'",
        ),
        (
            {"models": {"m": {"profile": "nope"}}},
            "d.yaml: models.m.profile: a profile file or one of ['cato-tiny_cpu', 'codellama-7b_910b4', 'codellama-7b_a100', "
            "'starcoder2-7b_910b4'] (nope)",
        ),
        (  # inline fields: the field that is wrong, not the union's other branch (a name)
            {"models": {"m": {"profile": {**INLINE, "overhead_s": -1}}}},
            "d.yaml: models.m.profile.overhead_s: Input should be greater than or equal to 0",
        ),
        (
            {"models": {"m": {"profile": {**INLINE, "colour": "red"}}}},
            "d.yaml: models.m.profile.colour: Unexpected keyword argument",
        ),
        (
            {"models": {"m": {"profile": "codellama-7b_a100", "max_num_seqs": 0}}},
            "d.yaml: models.m.max_num_seqs: Input should be greater than or equal to 1",
        ),
    ],
)
def test_bad_deploy_names_file_field_and_expectation(over, message):
    assert error(tree(**over)) == message


def test_not_a_mapping_and_missing_or_malformed_files(tmp_path):
    assert error([1, 2]) == "d.yaml: (top level): a YAML mapping with models and provisioner"
    with pytest.raises(InputError) as e:
        load_deploy(tmp_path / "nope.yaml")
    assert str(e.value) == f"{tmp_path / 'nope.yaml'}: deploy: an existing YAML file"
    bad = tmp_path / "bad.yaml"
    bad.write_text("models:\n  m: [\n")
    with pytest.raises(InputError) as e:
        load_deploy(bad)
    assert str(e.value).startswith(f"{bad}: line ") and str(e.value).endswith(": well-formed YAML")


@pytest.mark.parametrize(
    "provisioner, message",
    [
        (
            {"kind": "static", "models": {"m": ["localhost:8000"]}},
            "d.yaml: provisioner.models: m: 'localhost:8000' is not an http(s):// URL",
        ),
        ({"kind": "static", "models": {"m": []}}, "d.yaml: provisioner.models: m: at least one URL"),
        (
            {"kind": "static", "models": {"other": ["http://h:1"]}},
            "d.yaml: provisioner.models: an entry for every model; missing ['m']",
        ),
        (
            {"kind": "process", "models": {"m": {"path": "/models/m"}}, "device": "tpu"},
            "d.yaml: provisioner.device: Input should be 'cpu', 'cuda' or 'ascend'",
        ),
        (
            {"kind": "process", "models": {"m": {"path": "/models/m"}}, "devices": [0, 0]},
            "d.yaml: provisioner.devices: a device id repeats",
        ),
        (
            {"kind": "process", "models": {"m": {"path": "${CATO_TEST_UNSET_VAR}"}}},
            "d.yaml: provisioner.models.m.path: set environment variables in '${CATO_TEST_UNSET_VAR}'",
        ),
        (
            {"kind": "ray", "models": {"m": {"path": "/models/m"}}, "num_cpus": -1},
            "d.yaml: provisioner.num_cpus: Input should be greater than or equal to 0",
        ),
    ],
)
def test_bad_provisioner_config(provisioner, message, monkeypatch):
    monkeypatch.delenv("CATO_TEST_UNSET_VAR", raising=False)
    with pytest.raises(InputError) as e:
        make_provisioner(parse_deploy(tree(provisioner=provisioner), "d.yaml"))
    assert str(e.value) == message


def test_process_provisioner_pins_devices(monkeypatch):
    monkeypatch.setenv("CATO_TEST_MODEL_DIR", "/models/m")
    prov = make_provisioner(
        parse_deploy(
            tree(
                models={"m": {"profile": "codellama-7b_a100", "max_num_seqs": 8, "priority_scheduling": True}},
                provisioner={
                    "kind": "process",
                    "device": "ascend",
                    "devices": [4, 5, 6],
                    "devices_per_replica": 2,
                    "python": "/venv/bin/python",
                    "models": {"m": {"path": "${CATO_TEST_MODEL_DIR}"}},
                },
            ),
            "d.yaml",
        )
    )
    assert prov.capacity("m") == 1
    server = prov._server("m", "m-1", [4, 5])
    assert server.environment()["ASCEND_RT_VISIBLE_DEVICES"] == "4,5"
    cmd = server.command()
    assert cmd[:4] == ["/venv/bin/python", "-m", "vllm.entrypoints.openai.api_server", "--model"]
    assert cmd[4] == "/models/m" and cmd[cmd.index("--served-model-name") + 1] == "m"
    assert cmd[cmd.index("--max-num-seqs") + 1] == "8" and "--scheduling-policy" in cmd


def test_emulator_kind_is_looked_up_lazily(monkeypatch):
    monkeypatch.setitem(registry.KINDS, "emulator", "cato_live.provisioners.not_written_yet:EmulatorProvisioner")
    with pytest.raises(InputError) as e:
        make_provisioner(parse_deploy(tree(provisioner={"kind": "emulator"}), "d.yaml"))
    assert str(e.value) == (
        "d.yaml: provisioner.kind: 'emulator' needs its module cato_live.provisioners.not_written_yet installed"
    )


def test_cli_bad_input_is_one_line_and_exit_2(tmp_path):
    res = CliRunner().invoke(app, ["serve", str(tmp_path / "missing.yaml")])
    assert res.exit_code == 2
    assert res.output.strip() == f"error: {tmp_path / 'missing.yaml'}: deploy: an existing YAML file"
    bad = tmp_path / "d.yaml"
    bad.write_text(yaml.safe_dump(tree(router="fastest")))
    res = CliRunner().invoke(app, ["serve", str(bad), "--port", "99999"])
    assert res.exit_code == 2 and res.output.strip() == "error: --port: 99999: a port number 0-65535"
    res = CliRunner().invoke(app, ["serve", str(bad)])
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert res.output.strip().startswith(f"error: {bad}: (top level): unknown router 'fastest'")
