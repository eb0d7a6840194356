"""Layer 6: the domain — remote tokens, Annex A device IDs, resource registry and filters."""
