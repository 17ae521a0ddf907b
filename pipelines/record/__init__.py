"""The patient's record: access rules, audit trail, lifecycle, restitution and purge (feature slice)."""
