"""The pure core of the insurer feature: batch parsing and the CNAM-HR document."""
