"""What lasts: the journal, the lock, the output table, caches."""
