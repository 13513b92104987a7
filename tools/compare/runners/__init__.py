"""Runners: one script per client, speaking the protocol described in tools/compare/run.py."""
