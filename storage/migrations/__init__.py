"""Alembic migrations of the index database (SQLite and PostgreSQL): the only source of its schema.

Owns: env.py (Alembic's environment), versions/ (one revision per schema change, r<NNNN>_<slug>.py) and
script.py.mako (the template `alembic revision` writes new ones from).  storage.sql.migrate runs them:
`meshub migrate`, and every SqlIndex.connect (so `meshub run`, the gateways and the tests start on head).
Does not: hold the models (storage.sql.schema) or run anything by itself.
"""
