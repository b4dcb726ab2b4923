"""Benchmarks: the gateway against the database's own limit, measured in the same run (`make bench`)."""
