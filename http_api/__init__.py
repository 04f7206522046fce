"""The REST door: aiohttp routes that validate, call a handler, and answer JSON."""
