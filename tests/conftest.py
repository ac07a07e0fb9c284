# Shared fixtures live in their own modules, one per real component they start.
pytest_plugins = ["tests.fixtures_repl", "tests.fixtures_model"]
