"""Pure core: parsing, validation and classification of documents; no I/O."""
