"""Validation of the simulator against live runs: one trace simulated and replayed on real replicas.

The one package that imports both drivers (cato_sim and cato_live do not import each other):
`cato-live validate` reaches it from cato_live's CLI, the composition root.
"""
