"""Replica sync: the hybrid logical clock, node identity, change capture, the change feed and the merge."""
