"""A vLLM-compatible replica timed by the simulator's engine model in real time (no accelerator)."""
