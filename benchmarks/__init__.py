"""pydsqlite benchmarks: each case runs against its reference in the same process (``python -m benchmarks``)."""
