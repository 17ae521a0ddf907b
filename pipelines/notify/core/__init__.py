"""The pure core of notifications: which notice, on which channel, when."""
