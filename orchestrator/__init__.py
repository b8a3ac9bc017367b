"""Orchestrator: CLI, config, Ray runtime, pipeline, benchmark store, results and reports."""

__version__ = "0.1.0"
