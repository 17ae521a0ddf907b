"""Configuration: typed settings and the decision tables (classification, schema) shipped as data."""
