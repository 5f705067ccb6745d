"""tidelog benchmark scripts (run them as modules, e.g. `python -m benchmarks.embedded`); not tests."""
