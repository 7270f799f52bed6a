"""CATO's policy core: task graphs, the Profiler's slack math, routers, scalers, metrics.

Pure Python. It knows nothing of SimPy, HTTP or clocks: time is a float of seconds that the
driver (cato_sim or cato_live) passes in as ``now``.
"""

__version__ = "0.1.0"
