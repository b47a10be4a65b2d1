"""Stage module: see docs/architecture.md."""
