"""The pure core of document intake: who may write into which record."""
