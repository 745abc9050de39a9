"""The evaluation harness: benchmarks, metrics, run directories, tables and the regression gate.

It reaches models only through its adapter protocol and may import ``unilip``; ``unilip`` never
imports it. Its parts arrive with the harness issue (see README: Status).
"""
