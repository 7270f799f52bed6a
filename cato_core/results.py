"""The result tables both drivers write, and a writer that streams them to parquet.

tasks.parquet     one row per task of the trace, exactly once, with a status
nodes.parquet     one row per task node that was started
replicas.parquet  one row per replica: asked, ready, released, busy seconds
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

# A task's status, given once when it ends (cato_core.task_run.TaskRun.end):
#   ok         every node finished; ttft_s, e2e_s and met measured
#   failed     a node failed (error: "node <name>: <why>") or the driver itself did
#   timeout    a node ran out of time (a request timeout, a gateway's 504) or the task was
#              still open at the simulator's drain horizon
#   cancelled  the run stopped before the task finished (Ctrl-C, the client went away)
# Unless ok: e2e_s is empty and met is False. A node's statuses: cato_core.node_record.
STATUSES = ("ok", "failed", "timeout", "cancelled")

TASKS = pa.schema(
    [
        ("task_id", pa.string()),
        ("task_type", pa.string()),
        ("metric", pa.string()),
        ("arrival_s", pa.float64()),
        ("ttft_s", pa.float64()),  # arrival to the first token of the last LLM node
        ("e2e_s", pa.float64()),  # arrival to the end of the last node
        ("sla_s", pa.float64()),
        ("met", pa.bool_()),  # critical metric <= SLA (False unless status is ok)
        ("status", pa.string()),
        ("error", pa.string()),
    ]
)

NODES = pa.schema(
    [
        ("task_id", pa.string()),
        ("node", pa.string()),
        ("kind", pa.string()),
        ("model", pa.string()),
        ("replica", pa.string()),
        ("priority", pa.int8()),
        ("slack_s", pa.float64()),  # deadline - time at routing
        ("predicted_wait_s", pa.float64()),  # W_k of the chosen replica at routing
        ("wait_s", pa.float64()),  # routed to taken by the engine
        ("deadline_s", pa.float64()),
        ("queued_s", pa.float64()),
        ("start_s", pa.float64()),
        ("first_token_s", pa.float64()),
        ("end_s", pa.float64()),
        ("prompt_tokens", pa.int64()),
        ("output_tokens", pa.int64()),
        ("status", pa.string()),
    ]
)

REPLICAS = pa.schema(
    [
        ("replica_id", pa.string()),
        ("model", pa.string()),
        ("machine", pa.int32()),
        ("asked_s", pa.float64()),
        ("ready_s", pa.float64()),
        ("released_s", pa.float64()),  # the run's end if never released
        ("busy_s", pa.float64()),  # time with at least one sequence running
        ("requests", pa.int64()),
    ]
)


class TableWriter:
    """Collects rows as tuples and streams them to one parquet file in row groups.

    A group's rows go to pyarrow as one struct array: it reads the tuples field by field in
    C++, where a transpose in Python (zip(*rows)) and a conversion per column cost twice
    as much (bench/scale.py writes a row for every task and node of a million tasks).
    """

    def __init__(self, path: str | Path, schema: pa.Schema, rows_per_group: int = 65536):
        self.path, self.schema, self.rows_per_group = Path(path), schema, rows_per_group
        self._row_type = pa.struct(list(schema))
        self._rows: list[tuple] = []
        self._writer: pq.ParquetWriter | None = None
        self.count = 0

    def add(self, row: tuple) -> None:
        self._rows.append(row)
        if len(self._rows) >= self.rows_per_group:
            self._flush()

    def _flush(self) -> None:
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._writer = pq.ParquetWriter(self.path, self.schema)
        rows = pa.array(self._rows, self._row_type)
        self._writer.write_batch(pa.RecordBatch.from_struct_array(rows))
        self.count += len(self._rows)
        self._rows = []

    def close(self) -> None:
        if self._rows or self._writer is None:
            self._flush()
        self._writer.close()
