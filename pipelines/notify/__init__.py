"""Patient notifications: notices by channel, preferences, contacts and devices (feature slice)."""
