"""Run directories, per-item records, sharding and resume."""
