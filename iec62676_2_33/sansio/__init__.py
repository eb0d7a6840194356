"""Layer 1: sans-IO protocol core. No asyncio, socket, ssl or clock in here."""
