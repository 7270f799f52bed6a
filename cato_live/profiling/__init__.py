"""`cato-live profile`: measure a live vLLM replica and fit a device profile to it.

grid.py designs the measurement points, measure.py times them through the OpenAI API,
backend.py starts (or finds) the replica and describes it, command.py is the CLI. The fit
itself is cato_profiles.fit.fit_measured_profile.
"""
