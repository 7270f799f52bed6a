"""Trace importers: hand-written files of each public format, the type mapping, bad input."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from cato_core.errors import InputError
from cato_sim.cli import app
from cato_traces.files import read_trace
from cato_traces.generate import TASK_TYPES
from cato_traces.importers import RULES, classify_lengths, import_trace, parse_mix
from tests.conftest import ROOT

AZURE_CODE = ROOT / "data/traces/azure_llm_2023/AzureLLMInferenceTrace_code.csv"
SHIPPED = ROOT / "traces/azure_code.parquet"


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


@pytest.fixture
def azure(tmp_path):
    return write(
        tmp_path,
        "azure.csv",
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2023-11-16 18:17:03.9799600,4808,10\n"  # rule 2: completion
        "2023-11-16 18:17:04.0319600,3000,40\n"  # rule 5: summarization
        "2023-11-16 18:17:05.4799600,100,120\n"  # rule 8: translation
        "2023-11-16 18:18:03.9799600,20,200\n",
    )  # rule 9: generation


@pytest.fixture
def mooncake(tmp_path):
    rows = [
        dict(timestamp=27, input_length=6955, output_length=45, hash_ids=[46, 47]),  # rule 5
        dict(timestamp=1500, input_length=500, output_length=300, hash_ids=[1]),  # rule 8
        dict(timestamp=3027, input_length=9000, output_length=7, hash_ids=[]),
    ]  # rule 1
    return write(tmp_path, "mooncake.jsonl", "".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture
def burstgpt(tmp_path):
    return write(
        tmp_path,
        "burst.csv",
        "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
        "5,ChatGPT,80,18,98,Conversation log\n"  # rule 4: summarization
        "45,ChatGPT,1087,0,1087,Conversation log\n"  # failed: dropped
        "118,GPT-4,417,276,693,API log\n"  # rule 8: translation
        "120.5,ChatGPT,50,1000,1050,API log\n",
    )  # rule 9: generation


def test_azure_exact(azure):
    df = import_trace("azure", azure)
    assert list(df.columns) == ["task_id", "arrival_s", "task_type", "prompt_tokens", "output_tokens"]
    assert list(df["task_id"]) == ["t000001", "t000002", "t000003", "t000004"]
    assert df["arrival_s"].tolist() == pytest.approx([0.0, 0.052, 1.5, 60.0])
    assert df["prompt_tokens"].tolist() == [4808, 3000, 100, 20]
    assert df["output_tokens"].tolist() == [10, 40, 120, 200]
    assert df["task_type"].tolist() == ["completion", "summarization", "translation", "generation"]
    assert df.attrs["dropped"] == 0


def test_mooncake_exact_ms(mooncake):
    df = import_trace("mooncake", mooncake)
    assert df["arrival_s"].tolist() == [0.0, 1.473, 3.0]  # from the earliest request, ms -> s
    assert df["prompt_tokens"].tolist() == [6955, 500, 9000]
    assert df["output_tokens"].tolist() == [45, 300, 7]
    assert df["task_type"].tolist() == ["summarization", "translation", "completion"]


def test_burstgpt_drops_failed(burstgpt):
    df = import_trace("burstgpt", burstgpt)
    assert df["arrival_s"].tolist() == [0.0, 113.0, 115.5]
    assert df["prompt_tokens"].tolist() == [80, 417, 50]
    assert df["output_tokens"].tolist() == [18, 276, 1000]
    assert df["task_type"].tolist() == ["summarization", "translation", "generation"]
    assert df.attrs["dropped"] == 1


def test_dropped_first_row_rebases(tmp_path):
    p = write(
        tmp_path,
        "b.csv",
        "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
        "10,ChatGPT,0,5,5,API log\n12,ChatGPT,300,5,305,API log\n",
    )
    df = import_trace("burstgpt", p)
    assert df["arrival_s"].tolist() == [0.0] and df.attrs["dropped"] == 1


def test_unsorted_rows_sorted_by_arrival(tmp_path):
    p = write(
        tmp_path,
        "m.jsonl",
        '{"timestamp": 2000, "input_length": 9, "output_length": 7}\n'
        '{"timestamp": 1000, "input_length": 8, "output_length": 7}\n',
    )
    df = import_trace("mooncake", p)
    assert df["arrival_s"].tolist() == [0.0, 1.0] and df["prompt_tokens"].tolist() == [8, 9]


def test_time_scale(azure):
    base = import_trace("azure", azure)
    fast = import_trace("azure", azure, time_scale=0.5)
    assert fast["arrival_s"].tolist() == pytest.approx((base["arrival_s"] * 0.5).tolist())
    pd.testing.assert_frame_equal(fast.drop(columns="arrival_s"), base.drop(columns="arrival_s"))


# (prompt, output, types the table allows) for every row of the mapping table.
CASES = [
    (9000, 5, {"completion"}),  # 1
    (15, 15, {"completion"}),
    (256, 20, {"completion"}),  # 2
    (100, 10, {"completion", "summarization"}),
    (255, 20, {"completion", "summarization"}),  # 3
    (20, 10, {"summarization"}),
    (99, 20, {"summarization"}),  # 4
    (42, 21, {"summarization"}),
    (5000, 50, {"summarization"}),  # 5
    (102, 51, {"summarization", "generation"}),
    (5000, 60, {"summarization", "generation"}),  # 6
    (122, 61, {"generation"}),
    (7000, 300, {"generation"}),  # 7
    (11, 21, {"translation"}),
    (121, 61, {"translation"}),
    (150, 300, {"translation"}),  # 8
    (10, 21, {"generation"}),
    (149, 300, {"generation"}),  # 9
]


@pytest.mark.parametrize("p,o,allowed", CASES)
def test_mapping_table(p, o, allowed):
    got = {classify_lengths(np.array([p]), np.array([o]), np.array([u]))[0] for u in (0.0, 0.49, 0.5, 0.999)}
    assert got == allowed  # the two-type rows give each type for half the coin


def test_every_rule_is_covered():
    rows = {
        int(np.select([c(np.array([p]), np.array([o])) for c, _ in RULES], np.arange(len(RULES)))[0])
        for p, o, _ in CASES
    }
    assert rows == set(range(len(RULES)))


def test_seeded_determinism_and_limit():
    a = import_trace("azure", AZURE_CODE, seed=3)
    pd.testing.assert_frame_equal(a, import_trace("azure", AZURE_CODE, seed=3))
    assert not a["task_type"].equals(import_trace("azure", AZURE_CODE, seed=4)["task_type"])
    # Only the ambiguous rows depend on the seed.
    b = import_trace("azure", AZURE_CODE, seed=4)
    assert (a["task_type"] != b["task_type"]).mean() < 0.1
    head = import_trace("azure", AZURE_CODE, seed=3, limit=100)
    pd.testing.assert_frame_equal(head, a.head(100))


def test_mix_mapping(azure):
    mix = {"translation": 1.0}
    df = import_trace("azure", azure, mapping="mix", mix=mix)
    assert set(df["task_type"]) == {"translation"}
    big = import_trace("azure", AZURE_CODE, mapping="mix", mix={"completion": 3, "generation": 1}, seed=1)
    assert big["task_type"].value_counts(normalize=True)["completion"] == pytest.approx(0.75, abs=0.02)
    pd.testing.assert_frame_equal(
        big, import_trace("azure", AZURE_CODE, mapping="mix", mix={"generation": 1, "completion": 3}, seed=1)
    )
    even = import_trace("azure", AZURE_CODE, mapping="mix")["task_type"].value_counts(normalize=True)
    assert set(even.index) == set(TASK_TYPES) and even.min() > 0.2


def test_shipped_azure_trace_regenerates():
    shipped = read_trace(SHIPPED)
    assert len(shipped) == 8819
    pd.testing.assert_frame_equal(import_trace("azure", AZURE_CODE, seed=0), shipped, check_dtype=False)


def test_shipped_mooncake_trace_regenerates():
    shipped = read_trace(ROOT / "traces/mooncake_conversation.parquet")
    assert len(shipped) == 12031
    source = ROOT / "data/traces/mooncake_fast25/conversation_trace.jsonl"
    pd.testing.assert_frame_equal(import_trace("mooncake", source, seed=0), shipped, check_dtype=False)


def error(fn, *a, **kw) -> InputError:
    with pytest.raises(InputError) as e:
        fn(*a, **kw)
    return e.value


AZ_HEAD = "TIMESTAMP,ContextTokens,GeneratedTokens\n"
BG_HEAD = "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"


@pytest.mark.parametrize(
    "kind,name,text,field,says",
    [
        (
            "azure",
            "a.csv",
            "TIMESTAMP,ContextTokens\n2023-11-16 18:17:03.9799600,4808\n",
            "GeneratedTokens",
            "required",
        ),
        ("azure", "a.csv", AZ_HEAD + "2023-11-16 18:17:03.9,1,1\nyesterday,1,1\n", "TIMESTAMP", "line 3"),
        ("azure", "a.csv", AZ_HEAD + "2023-11-16 18:17:03.9,-4,1\n", "ContextTokens", ">= 0"),
        ("azure", "a.csv", AZ_HEAD + "2023-11-16 18:17:03.9,4,1.5\n", "GeneratedTokens", "integers"),
        ("azure", "a.csv", AZ_HEAD + "2023-11-16 18:17:03.9,4,\n", "GeneratedTokens", "line 2"),
        ("azure", "a.csv", AZ_HEAD, "rows", "at least one"),
        ("azure", "a.csv", "", "file", "CSV"),
        ("mooncake", "m.jsonl", '{"timestamp": 0, "input_length": 5}\n', "output_length", "required"),
        (
            "mooncake",
            "m.jsonl",
            '{"timestamp": "soon", "input_length": 5, "output_length": 5}\n',
            "timestamp",
            "numbers",
        ),
        (
            "mooncake",
            "m.jsonl",
            '{"timestamp": 0, "input_length": 5, "output_length": 5}\nnot json\n',
            "file",
            "line 2",
        ),
        ("burstgpt", "b.csv", BG_HEAD + "1,ChatGPT,5,-1,4,API log\n", "Response tokens", ">= 0"),
        ("burstgpt", "b.csv", BG_HEAD + "1,ChatGPT,5,0,5,API log\n", "Request tokens/Response tokens", ">= 1"),
    ],
)
def test_bad_files_name_file_and_column(tmp_path, kind, name, text, field, says):
    p = write(tmp_path, name, text)
    e = error(import_trace, kind, p)
    assert (e.source, e.field) == (str(p), field) and says in e.expected


def test_missing_file(tmp_path):
    e = error(import_trace, "azure", tmp_path / "nope.csv")
    assert (e.source, e.field) == (str(tmp_path / "nope.csv"), "file")


@pytest.mark.parametrize(
    "kw,field",
    [
        (dict(kind="alibaba"), "kind"),
        (dict(time_scale=0), "time_scale"),
        (dict(time_scale=float("inf")), "time_scale"),
        (dict(seed=-1), "seed"),
        (dict(mapping="size"), "mapping"),
        (dict(limit=0), "limit"),
        (dict(mix={"completion": 1}), "mix"),  # weights without mapping="mix"
        (dict(mapping="mix", mix={"chat": 1}), "mix"),
        (dict(mapping="mix", mix={"completion": -1}), "mix.completion"),
        (dict(mapping="mix", mix={"completion": 0}), "mix"),
    ],
)
def test_bad_arguments(azure, kw, field):
    args = dict(kind="azure", path=azure) | kw
    assert error(import_trace, **args).field == field


def test_parse_mix():
    assert parse_mix("completion=1, generation=2.5") == {"completion": 1.0, "generation": 2.5}
    assert error(parse_mix, "completion=lots").field == "completion"


def invoke(*args):
    return CliRunner().invoke(app, ["trace", "import", *map(str, args)])


def test_cli_import(azure, tmp_path):
    out = tmp_path / "t.parquet"
    res = invoke("azure", azure, "--out", out, "--time-scale", 2, "--limit", 3)
    assert res.exit_code == 0, res.output
    assert res.stdout.strip().splitlines() == [
        f"3 tasks over 3.0 s: completion 1, generation 0, summarization 1, translation 1; dropped 0 -> {out}"
    ]
    df = read_trace(out)
    assert df["arrival_s"].tolist() == pytest.approx([0.0, 0.104, 3.0])
    res = invoke("azure", azure, "--out", out, "--mapping", "mix", "--mix", "generation=1", "--seed", 5)
    assert res.exit_code == 0 and set(read_trace(out)["task_type"]) == {"generation"}


@pytest.mark.parametrize(
    "args,says",
    [
        (["azure", "{tmp}/nope.csv"], "nope.csv: file:"),
        (["azure", "{bad}"], "TIMESTAMP"),
        (["burst", "{bad}"], "kind"),
        (["azure", "{bad}", "--mapping", "mix", "--mix", "completion=x"], "--mix: completion:"),
    ],
)
def test_cli_bad_input_one_line_exit_2(tmp_path, args, says):
    bad = write(tmp_path, "bad.csv", AZ_HEAD + "never,1,1\n")
    args = [a.format(tmp=tmp_path, bad=bad) for a in args]
    res = invoke(*args, "--out", tmp_path / "o.parquet")
    assert res.exit_code == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0]
    assert "Traceback" not in res.output and not (tmp_path / "o.parquet").exists()
