"""Import public LLM request traces into the trace schema (cato_traces.files).

Formats, read as published:

| kind     | file  | time column                                      | prompt / output tokens           |
|----------|-------|--------------------------------------------------|----------------------------------|
| azure    | CSV   | TIMESTAMP, "2023-11-16 18:17:03.9799600"         | ContextTokens / GeneratedTokens  |
| mooncake | JSONL | timestamp, milliseconds                          | input_length / output_length     |
| burstgpt | CSV   | Timestamp, seconds                               | Request tokens / Response tokens |

arrival_s is seconds from the earliest request, times ``time_scale`` (0.5 = twice as fast).
Rows with a zero token count are dropped and counted in ``df.attrs["dropped"]``: a task needs
at least one prompt and one output token, and BurstGPT logs failed requests with
Response tokens 0, which never produced the output we would simulate. Other columns
(hash_ids, Model, Log Type, ...) are ignored. Task ids are t000001... in arrival order.

Task types, ``mapping="lengths"`` (default): by token shape, o = output, p = prompt tokens;
the first matching row wins; a row with two types picks one with a seeded 1:1 coin.

| # | output o | prompt p          | type                        | why (trace_gen.LENGTHS, PAPER.md)               |
|---|----------|-------------------|-----------------------------|-------------------------------------------------|
| 1 | < 10     | any               | completion                  | only completion outputs (5-20) go below 10      |
| 2 | 10-20    | < 2o or >= 256    | completion                  | long context (py150 ~670; summarization p99 232)|
| 3 | 10-20    | 100-255           | completion or summarization | both fit: completion p1 ~100, summarization 232 |
| 4 | 10-20    | 2o-99             | summarization               | short output of a longer, function-sized input  |
| 5 | 21-50    | >= 2o             | summarization               | outputs 10-60 with input much longer than output|
| 6 | 51-60    | >= 2o             | summarization or generation | summarization ends at 60, generation starts at 50|
| 7 | > 60     | >= 2o             | generation                  | long output from a longer spec (CONCODE 220->66)|
| 8 | > 20     | o/2 .. 2o-1       | translation                 | code in, code out of about its size (50->63)    |
| 9 | > 20     | < o/2             | generation                  | short instruction, long output                  |

``mapping="mix"``: each request draws its type by the ``mix`` weights (default 1:1:1:1),
ignoring its shape. Both use one ``numpy.random.default_rng(seed)``, one draw a request in
arrival order, so ``limit=n`` gives the first n tasks of the full import.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from cato_core.errors import InputError
from cato_traces.generate import TASK_TYPES

SRC = "import_trace"

# kind -> (time column, its units per second or None for a date-time, prompt column, output column)
FORMATS = {
    "azure": ("TIMESTAMP", None, "ContextTokens", "GeneratedTokens"),
    "mooncake": ("timestamp", 1000.0, "input_length", "output_length"),
    "burstgpt": ("Timestamp", 1.0, "Request tokens", "Response tokens"),
}
KINDS = tuple(FORMATS)
MAPPINGS = ("lengths", "mix")

# The table above as code: (condition on prompt p and output o, candidate types), first match.
RULES = (
    (lambda p, o: o < 10, ("completion",)),
    (lambda p, o: (o <= 20) & ((p < 2 * o) | (p >= 256)), ("completion",)),
    (lambda p, o: (o <= 20) & (p >= 100), ("completion", "summarization")),
    (lambda p, o: o <= 20, ("summarization",)),
    (lambda p, o: (p >= 2 * o) & (o <= 50), ("summarization",)),
    (lambda p, o: (p >= 2 * o) & (o <= 60), ("summarization", "generation")),
    (lambda p, o: p >= 2 * o, ("generation",)),
    (lambda p, o: 2 * p >= o, ("translation",)),
    (lambda p, o: np.ones_like(o, bool), ("generation",)),
)


def _read(kind: str, path: Path) -> pd.DataFrame:
    src = str(path)
    if not path.is_file():
        raise InputError(src, "file", f"an existing {kind} trace file")
    if kind == "mooncake":
        # json, not pd.read_json: that would guess a "timestamp" column to be epoch dates.
        try:
            lines = path.read_text().strip().splitlines()
        except UnicodeDecodeError:
            raise InputError(src, "file", "UTF-8 text, JSON objects one a line") from None
        rows = []
        for i, line in enumerate(lines, 1):
            try:
                rows.append(json.loads(line))
            except ValueError:
                rows.append(None)
            if not isinstance(rows[-1], dict):
                raise InputError(src, "file", f"JSON objects one a line (line {i}: {line[:40]!r})")
        return pd.DataFrame(rows)
    try:
        return pd.read_csv(path)
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as e:
        raise InputError(src, "file", f"a CSV file with a header row ({e.__class__.__name__})") from None


def _bad_line(kind: str, mask) -> int:
    """The file line of the first bad row (CSV line 1 is the header)."""
    return int(np.flatnonzero(np.asarray(mask))[0]) + (1 if kind == "mooncake" else 2)


def _seconds(kind: str, src: str, col: pd.Series, unit: float | None) -> np.ndarray:
    if unit is None:
        t = pd.to_datetime(col.astype(str), format="ISO8601", errors="coerce")
        expected = "date-times like 2023-11-16 18:17:03.9799600"
        bad = t.isna()
        if bad.any():
            raise InputError(src, col.name, f"{expected} (line {_bad_line(kind, bad)}: {col[bad].iloc[0]!r})")
        return (t - t.min()).dt.total_seconds().to_numpy()
    x = pd.to_numeric(col, errors="coerce").to_numpy(np.float64)
    bad = ~np.isfinite(x)
    if bad.any():
        raise InputError(src, col.name, f"numbers (line {_bad_line(kind, bad)}: {col[bad].iloc[0]!r})")
    return (x - x.min()) / unit


def _tokens(kind: str, src: str, col: pd.Series) -> np.ndarray:
    x = pd.to_numeric(col, errors="coerce").to_numpy(np.float64)
    bad = ~np.isfinite(x) | (x < 0) | (x != np.round(x))
    if bad.any():
        raise InputError(
            src, col.name, f"token counts, integers >= 0 (line {_bad_line(kind, bad)}: {col[bad].iloc[0]!r})"
        )
    return x.astype(np.int64)


def classify_lengths(prompt: np.ndarray, output: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Task types by the RULES table; ``u`` (uniform [0, 1), one a row) breaks the ambiguous rows."""
    p, o = np.asarray(prompt), np.asarray(output)
    rule = np.select([cond(p, o) for cond, _ in RULES], np.arange(len(RULES)))
    # Pad every rule's candidates to two so one fancy index picks for all rows.
    cands = np.array([types * (2 // len(types)) for _, types in RULES], dtype=object)
    k = (np.asarray(u) * np.array([len(t) for _, t in RULES])[rule]).astype(np.int64)
    return cands[rule, k]


def parse_mix(text: str, source: str = "--mix") -> dict[str, float]:
    """``"completion=1,generation=2"`` -> weights; bad pairs raise InputError."""
    weights = {}
    for part in filter(None, (s.strip() for s in text.split(","))):
        name, _, w = part.partition("=")
        try:
            weights[name.strip()] = float(w)
        except ValueError:
            raise InputError(
                source, name.strip() or part, "type=weight pairs, e.g. completion=1,generation=2"
            ) from None
    return weights


def _check_mix(mix) -> dict[str, float]:
    if mix is None:
        return dict.fromkeys(TASK_TYPES, 1.0)
    if not isinstance(mix, dict) or not mix:
        raise InputError(SRC, "mix", f"a non-empty mapping of task type to weight, types {list(TASK_TYPES)}")
    for k, w in mix.items():
        if k not in TASK_TYPES:
            raise InputError(SRC, "mix", f"task types from {list(TASK_TYPES)} (got {k!r})")
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not (math.isfinite(w) and w >= 0):
            raise InputError(SRC, f"mix.{k}", f"a weight >= 0 (got {w!r})")
    if sum(mix.values()) <= 0:
        raise InputError(SRC, "mix", "weights summing to more than 0")
    return mix


def _check_args(kind, seed, time_scale, mapping, mix, limit) -> None:
    if kind not in FORMATS:
        raise InputError(SRC, "kind", f"one of {list(KINDS)} (got {kind!r})")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(SRC, "seed", f"an integer >= 0 (got {seed!r})")
    if isinstance(time_scale, bool) or not isinstance(time_scale, (int, float)) or not (0 < time_scale < math.inf):
        raise InputError(SRC, "time_scale", f"a factor > 0 (got {time_scale!r})")
    if mapping not in MAPPINGS:
        raise InputError(SRC, "mapping", f"one of {list(MAPPINGS)} (got {mapping!r})")
    if mix is not None and mapping != "mix":
        raise InputError(SRC, "mix", "mapping='mix' (the lengths mapping takes no weights)")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 1):
        raise InputError(SRC, "limit", f"an integer >= 1 (got {limit!r})")


def import_trace(
    kind: str,
    path: str | Path,
    *,
    seed: int = 0,
    time_scale: float = 1.0,
    mapping: str = "lengths",
    mix: dict[str, float] | None = None,
    limit: int | None = None,
) -> pd.DataFrame:
    """A trace (cato_traces.files schema) of the ``kind`` file at ``path``; see the module doc.

    ``limit`` keeps the first n requests by arrival. ``attrs["dropped"]`` counts the rows
    dropped for a zero token count.
    """
    _check_args(kind, seed, time_scale, mapping, mix, limit)
    weights = _check_mix(mix) if mapping == "mix" else None
    path = Path(path)
    src = str(path)
    raw = _read(kind, path)
    tcol, unit, pcol, ocol = FORMATS[kind]
    if raw.empty:
        raise InputError(src, "rows", "at least one request")
    for col in (tcol, pcol, ocol):
        if col not in raw.columns:
            raise InputError(src, col, f"a required column (need {tcol}, {pcol}, {ocol})")
    t = _seconds(kind, src, raw[tcol], unit)
    prompt, output = _tokens(kind, src, raw[pcol]), _tokens(kind, src, raw[ocol])

    keep = (prompt > 0) & (output > 0)
    if not keep.any():
        raise InputError(src, f"{pcol}/{ocol}", "at least one request with both token counts >= 1")
    order = np.flatnonzero(keep)[np.argsort(t[keep], kind="stable")][:limit]
    # Rebase on the earliest kept request, so a dropped first row leaves no idle lead-in.
    t, prompt, output = t[order] - t[order].min(), prompt[order], output[order]
    n = order.size

    rng = np.random.default_rng(seed)
    if weights is None:
        types = classify_lengths(prompt, output, rng.random(n))
    else:
        names = [k for k in TASK_TYPES if weights.get(k, 0) > 0]  # canonical order: key order is no input
        w = np.array([weights[k] for k in names], dtype=np.float64)
        types = np.array(names, dtype=object)[rng.choice(len(names), size=n, p=w / w.sum())]

    df = pd.DataFrame(
        {
            "task_id": [f"t{i:06d}" for i in range(1, n + 1)],
            "arrival_s": t * float(time_scale),
            "task_type": types,
            "prompt_tokens": prompt,
            "output_tokens": output,
        }
    )
    df.attrs["dropped"] = int((~keep).sum())
    return df


def summary(df: pd.DataFrame) -> str:
    """``"8819 tasks over 3441.6 s: completion 6000, ..."`` for the CLI."""
    counts = df["task_type"].value_counts()
    types = ", ".join(f"{t} {counts.get(t, 0)}" for t in TASK_TYPES)
    return f"{len(df)} tasks over {df['arrival_s'].max():.1f} s: {types}; dropped {df.attrs.get('dropped', 0)}"
