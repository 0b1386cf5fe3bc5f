"""pytest-benchmark suites (run: pytest benchmarks/ --benchmark-only); not part of the test run."""
