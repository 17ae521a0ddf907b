"""The CDA reading kit shared by every feature (pure): safe parsing, the header, CI-SIS validation, classification."""
