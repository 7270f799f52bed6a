"""The CATO gateway: an OpenAI-compatible server that routes calls with the core's policies."""
