"""The discrete-event cluster model (SimPy) that drives cato_core's policies, and `cato-sim`."""
