"""Device profiles: the shipped profile files with their provenance, and the code that fits them.

The profile model itself (step time from a batch) is policy input and lives in
cato_core.profile; this package holds the data and the fitting, which need numpy and pandas.
"""
