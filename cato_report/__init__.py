"""What people look at after a run: the summary figures of the result tables, plots, tables.

Reads the tables both drivers write (cato_core.results); knows nothing of how they were made.
"""
