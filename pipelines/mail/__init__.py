"""MSSanté mail: admission, relay, local delivery, XDM filing, reports and mailboxes (feature slice)."""
