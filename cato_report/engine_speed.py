"""How fast the engine ran against its profile, from a run's lone LLM calls.

A call is *lone* when no other call overlapped it on its replica, from the engine taking it
(``start_s``) to its end: it ran as the profile's isolated formulas describe it. Its time to
first token (``first_token_s - start_s``) against ``DeviceProfile.prefill_s(prompt)``, and its
decode (``end_s - first_token_s``) against ``DeviceProfile.decode_s(prompt, output)``, give
two ratios; their medians over the lone calls say how fast the engine ran in this run,
relative to its profile.

A simulated run gives 1.0 (its engine follows the profile, which checks this code). A live
run gives the machine's speed during the replay: on a shared host it drifts between the
profile's measurement and the replay (README, "Calibrate and validate"), and a ratio far
from 1 there is that drift, or a profile of another machine, not the simulator's model of
batching and queueing. The live TTFT ratio also carries what lies between the gateway's
clock and the engine (the gateway's hop), which the profile, measured on the replica
directly, does not.

pyarrow and numpy only, like cato_report.wait_prediction.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from cato_core.profile import DeviceProfile

COLUMNS = ["kind", "status", "model", "replica", "start_s", "first_token_s", "end_s", "prompt_tokens", "output_tokens"]


def lone(replica: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Which calls no other call on the same replica overlapped, over [start, end].

    Calls that touch (one ends when the next starts) do not overlap: an engine takes the
    next request at the step boundary where the last one finished.
    """
    order = np.lexsort((end, start, replica))
    r, s, e = replica[order], start[order], end[order]
    alone = np.ones(r.size, dtype=bool)
    first = np.flatnonzero(np.r_[True, r[1:] != r[:-1]])  # where each replica's calls begin
    for a, b in zip(first, np.r_[first[1:], r.size], strict=True):
        ended_before = np.maximum.accumulate(np.r_[-np.inf, e[a : b - 1]])  # latest end of the earlier calls
        starts_after = np.r_[s[a + 1 : b], np.inf]
        alone[a:b] = (ended_before <= s[a:b]) & (starts_after >= e[a:b])
    out = np.empty_like(alone)
    out[order] = alone
    return out


def engine_speed(nodes: str | Path, profiles: Mapping[str, DeviceProfile]) -> dict:
    """{"lone_calls", "ttft_ratio", "decode_ratio"} of the LLM calls in ``nodes`` (a
    nodes.parquet) that ran alone and ended ok, measured / the profile of their model
    (medians; None without such calls, or for decode without a call of two or more tokens)."""
    with pq.ParquetFile(nodes) as f:
        t = f.read(columns=COLUMNS)
    ran = pc.and_(pc.equal(t["kind"], "llm"), pc.equal(t["status"], "ok"))
    # Judged only where the model has a profile and the replica is known (not so against a
    # --target server the gateway did not route for).
    ran = pc.and_(ran, pc.is_in(t["model"], pa.array(list(profiles), pa.string())))
    ran = pc.and_(ran, pc.is_valid(t["replica"]))
    for col in ("start_s", "first_token_s", "end_s"):
        ran = pc.and_(ran, pc.is_finite(t[col]))
    t = t.filter(pc.fill_null(ran, False))
    start, first, end = (t[c].to_numpy().astype(float) for c in ("start_s", "first_token_s", "end_s"))
    _, replica = np.unique(np.asarray(t["replica"].to_pylist(), dtype=object), return_inverse=True)
    alone = lone(replica, start, end)
    models, prompts, outputs = (t[c].to_pylist() for c in ("model", "prompt_tokens", "output_tokens"))
    ttft, decode = [], []
    for i in np.flatnonzero(alone):
        p = profiles[models[i]]
        ttft.append((first[i] - start[i]) / p.prefill_s(prompts[i]))
        expected = p.decode_s(prompts[i], outputs[i])
        if expected > 0:
            decode.append((end[i] - first[i]) / expected)
    return {
        "lone_calls": int(alone.sum()),
        "ttft_ratio": float(np.median(ttft)) if ttft else None,
        "decode_ratio": float(np.median(decode)) if decode else None,
    }
