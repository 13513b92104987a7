"""`python -m tools.bench` (`make bench`): download throughput of acr-blob, its peers and the
limits (raw transfer, in-memory sha256) against a registry on loopback.

Writes docs/benchmarks.md (the table, with the machine it ran on) and docs/benchmarks.json (every
run's raw numbers); `--no-write` only prints the table. See run.py for the options and worker.py
for what is measured inside each case's own process.
"""
