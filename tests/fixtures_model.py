"""Fixtures that load the real GGUF model (filled in by the model work)."""
