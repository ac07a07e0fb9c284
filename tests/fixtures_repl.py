"""Fixtures that start the real Debian nREPL (filled in by the REPL work)."""
