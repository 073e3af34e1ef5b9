"""Live events: the WebSocket endpoint over the pub/sub bus."""
