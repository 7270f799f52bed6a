"""A process that loads matplotlib while a run simulates, then draws the run's plots.

matplotlib takes about as long to import as a small run takes to simulate
(bench/cli_overhead.py splits the two). ``cato-sim run`` starts a PlotWorker before it
simulates: the worker imports matplotlib and cato_report.plots on the machine's other core
while the simulation runs, and draws once the tables and the summary table are out. The
plots are drawn from the result files alone, so the worker needs nothing but their folders
and the summaries.

On Linux the worker is forked, so it starts with what the command has imported already;
make it before any thread starts (rich's progress bar runs one), as forking a process that
runs threads is unsafe. Elsewhere it is spawned, a fresh interpreter. It ignores Ctrl-C,
which the command handles; leaving the ``with`` block ends it. Where no process can be
started (no semaphores, as in some sandboxes), it draws in the calling process instead.
"""

from __future__ import annotations

import multiprocessing
import signal
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path


def _load() -> None:
    """The worker's first job: ignore Ctrl-C, and import what drawing needs."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import matplotlib.backends.backend_agg
    import matplotlib.figure  # noqa: F401

    import cato_report.plots  # noqa: F401


def _plot_comparison(runs: dict[str, Path], summaries: dict[str, dict], out: Path) -> list[Path]:
    from cato_report.plots import plot_comparison

    return plot_comparison(runs, summaries, out)


class PlotWorker:
    """One worker process, loading matplotlib from the moment it is made."""

    def __init__(self) -> None:
        try:
            method = "fork" if sys.platform == "linux" else "spawn"
            self._pool: ProcessPoolExecutor | None = ProcessPoolExecutor(
                1, mp_context=multiprocessing.get_context(method)
            )
            self._loaded = self._pool.submit(_load)  # starts the process now
        except (OSError, NotImplementedError):
            self._pool = None

    def plot_comparison(self, runs: dict[str, Path], summaries: dict[str, dict], out: Path) -> list[Path]:
        """cato_report.plots.plot_comparison, drawn in the worker; its files once written."""
        if self._pool is None:
            return _plot_comparison(runs, summaries, out)
        self._loaded.result()
        return self._pool.submit(_plot_comparison, runs, summaries, out).result()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> PlotWorker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
