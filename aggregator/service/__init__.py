"""The long-running service (``aggregator run``): scheduler, hot reload, signals, shutdown.

``runner`` ties the parts together; ``scheduler`` keeps one APScheduler job per source;
``reload`` watches the watchlist file; ``lifecycle`` holds the replica lock and the server.
"""

from aggregator.service.runner import Service, ServiceOptions

__all__ = ["Service", "ServiceOptions"]
