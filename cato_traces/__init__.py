"""Traces: the trace file format, a generator of Poisson task mixes, and importers of public traces.

Both drivers read the same trace files: cato-sim simulates them, cato-live replays them.
"""
