"""Document intake: a submitted CDA validated, classified, stored, indexed and announced (feature slice)."""
