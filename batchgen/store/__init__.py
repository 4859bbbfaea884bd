"""What lasts: journal, lock, output table."""
