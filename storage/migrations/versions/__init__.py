"""The revisions, in order (down_revision chains them); each one is applied once, in a transaction."""
