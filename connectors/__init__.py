"""The edges: bytes in from the world and answers back, in each protocol's own terms."""
