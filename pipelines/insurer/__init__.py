"""The insurer's reimbursement history: batches held and filed as CNAM-HR documents (feature slice)."""
