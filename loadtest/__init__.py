"""Load tests for the digitserve HTTP service: Locust users, a headless runner and a CLI.

`python -m loadtest run ...` measures one load level; `python -m loadtest sweep ...` walks
concurrency levels (or arrival rates) and plots throughput against latency.
"""
