"""Mastership of a data directory: the lock, the epoch (fencing token), who-is-master files.

Knows nothing of the data the gateway keeps.
"""
