"""Replay a trace against a live OpenAI-compatible endpoint, open loop, into the result tables."""
