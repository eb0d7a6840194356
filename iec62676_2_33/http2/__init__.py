"""Layer 3: HTTP/2 roles on h2 (sans-IO), with the limits h2 does not enforce."""
