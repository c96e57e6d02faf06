"""SQL text: rendering and quoting, reading DDL, and desired state given as SQL."""
