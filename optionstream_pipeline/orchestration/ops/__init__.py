"""Ops of the Dagster layer: the long-running capture op."""
