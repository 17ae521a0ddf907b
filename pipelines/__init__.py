"""Pipelines: the stages documents go through, with their pure core in pipelines.core."""
