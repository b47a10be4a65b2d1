"""The ASGI app: feeds and pages (web.feeds), health and metrics (web.ops)."""
