"""Pipelines: one folder per feature (documents, mail, notify, record, insurer), each with its pure core/,
its ports and its services; cda/ is the CDA reading kit they share."""
