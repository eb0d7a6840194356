"""Layer 4: asyncio runtimes — the device (HTTP server and uplink agent) and the cloud listener."""
