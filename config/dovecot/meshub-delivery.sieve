# MES Hub: a copy the hub delivers again is filed once (Sieve "duplicate", RFC 7352).
# Run before any user script (sieve_before in dovecot.conf.in).  The hub stamps every LMTP copy with
# `X-Meshub-Delivery: <submission id>` (connectors/outbound/lmtp.py, Rule 2) and removes any such header
# the message already had.  The id is tracked per mailbox (the user's duplicate database, in its home)
# only once the message was filed, so a second copy with the same id - the hub retried after a lost
# reply, or it died between LMTP's 250 and recording "delivered" - is discarded and LMTP still answers
# 250.  Ten days covers the relay's five-day delivery lifetime ([relay.retry]); Dovecot caps :seconds at
# sieve_duplicate_max_period, which dovecot.conf.in sets to the same ten days.
# Mail without the header (not from the hub) is not tracked and goes on as before.
require ["duplicate"];

if exists "X-Meshub-Delivery" {
  if duplicate :header "X-Meshub-Delivery" :seconds 864000 {
    discard;
    stop;
  }
}
