"""Durable state of the data directory: the outbox (queue) and the declined batches."""
