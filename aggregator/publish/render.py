"""Feed and page rendering: developments in, bytes out. Pure."""
