"""`make bench`: measured throughput and latency of Tenure's hot paths against
their targets, on PostgreSQL and Redis, written to docs/benchmarks.md.

`python -m bench [workload ...] [--quick]`; `bench.harness` is the shared
plumbing, and each other module here is one workload.
"""
