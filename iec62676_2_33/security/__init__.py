"""Access control of the service interfaces (SEC-1..4)."""
