"""The gateway: aiohttp HTTP and WebSocket server for browsers (roadmap)."""
