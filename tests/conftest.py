"""Shared fixtures.  Service fixtures live in fixtures_*.py plugins: each skips when its service is
absent locally and FAILS when CI=true, so CI never silently skips an integration test.  The in-memory adapters
(fixtures_memory.py) need no service."""

from __future__ import annotations

pytest_plugins = ["tests.fixtures_db", "tests.fixtures_s3", "tests.fixtures_bus", "tests.fixtures_mail",
                  "tests.fixtures_memory"]
