"""Front-ends: every way in (CLI, daemon, nREPL bridge and proxy, terminal prompt, file watcher)
builds an engine with `common.open_engine` and calls it, directly or through `service`."""
