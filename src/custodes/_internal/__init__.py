"""Private helpers with no stability promise."""
