"""SQL adapters (PostgreSQL and SQLite) behind the features' ports."""
