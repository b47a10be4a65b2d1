"""aggregator: one feed entry per new distinct development on the topics you watch."""

__version__ = "0.1.0"
