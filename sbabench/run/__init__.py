"""Running suites: plan, execute, keys, result files, caches, training, provenance."""
