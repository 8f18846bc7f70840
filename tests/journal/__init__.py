"""The SQLite spend journal, in one process."""
