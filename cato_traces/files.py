"""The trace: one row a task. Read and checked here, so both drivers see the same thing.

Required columns: task_id (str), arrival_s (float, seconds from the trace start),
task_type (str), prompt_tokens (int > 0), output_tokens (int > 0).
Optional: prompt (str, the text sent live), sla_s (float > 0, overrides the type's SLA).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from cato_core.errors import InputError

REQUIRED = {
    "task_id": pa.string(),
    "arrival_s": pa.float64(),
    "task_type": pa.string(),
    "prompt_tokens": pa.int64(),
    "output_tokens": pa.int64(),
}
OPTIONAL = {"prompt": pa.string(), "sla_s": pa.float64()}


def trace_schema(with_prompt: bool = False, with_sla: bool = False) -> pa.Schema:
    fields = [pa.field(k, t, nullable=False) for k, t in REQUIRED.items()]
    if with_prompt:
        fields.append(pa.field("prompt", pa.string()))
    if with_sla:
        fields.append(pa.field("sla_s", pa.float64()))
    return pa.schema(fields)


def write_trace(df: pd.DataFrame, path: str | Path) -> None:
    """Write a trace parquet with the canonical column types, sorted by arrival."""
    df = df.sort_values("arrival_s", kind="stable").reset_index(drop=True)
    schema = trace_schema("prompt" in df, "sla_s" in df)
    table = pa.Table.from_pandas(df[schema.names], schema=schema, preserve_index=False)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)


def read_trace(path: str | Path, task_types: set[str] | None = None) -> pd.DataFrame:
    """Read and check a trace; bad input raises InputError naming the file and column."""
    src = str(path)
    if not Path(path).is_file():
        raise InputError(src, "trace", "an existing parquet file")
    try:
        with pq.ParquetFile(path) as f:  # one file: no dataset layer (pq.read_table imports it)
            df = f.read().to_pandas()
    except (pa.ArrowInvalid, OSError) as e:
        raise InputError(src, "trace", f"a readable parquet file ({e.__class__.__name__})") from None
    for col in REQUIRED:
        if col not in df.columns:
            raise InputError(src, col, f"a required column (need {', '.join(REQUIRED)})")
    if df.empty:
        raise InputError(src, "rows", "at least one task")
    if df["task_id"].duplicated().any():
        dup = df.loc[df["task_id"].duplicated(), "task_id"].iloc[0]
        raise InputError(src, "task_id", f"unique ids (repeated: {dup!r})")
    for col in ("arrival_s", "prompt_tokens", "output_tokens"):
        if not pd.api.types.is_numeric_dtype(df[col]) or df[col].isna().any():
            raise InputError(src, col, "numbers with no missing values")
    if (df["arrival_s"] < 0).any():
        raise InputError(src, "arrival_s", "seconds >= 0")
    for col in ("prompt_tokens", "output_tokens"):
        if (df[col] < 1).any():
            raise InputError(src, col, "integers >= 1")
    if "sla_s" in df and (df["sla_s"].dropna() <= 0).any():
        raise InputError(src, "sla_s", "seconds > 0 where given")
    if task_types is not None:
        unknown = sorted(set(df["task_type"].unique()) - task_types)
        if unknown:
            raise InputError(src, "task_type", f"one of {sorted(task_types)} (got {unknown[0]!r})")
    df["task_id"] = df["task_id"].astype(str)
    df["prompt_tokens"] = df["prompt_tokens"].astype("int64")
    df["output_tokens"] = df["output_tokens"].astype("int64")
    return df.sort_values("arrival_s", kind="stable").reset_index(drop=True)
