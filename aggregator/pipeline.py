"""The order of the ingest stages, as the rest of the program calls them.

``ingest`` / ``ingest_many`` take records (imported, fetched from a feed or scraped from a page)
through the ingest stages (``aggregator.ingest``: prepare, decide, apply; ``ingest_driver``) in
one transaction per batch. The fetch cycle that feeds them is ``aggregator.cycle``.
"""

from __future__ import annotations

from aggregator.ingest.prepare import prepare as prepare
from aggregator.ingest.types import IngestResult as IngestResult
from aggregator.ingest.types import Prepared as Prepared
from aggregator.ingest_driver import ingest as ingest
from aggregator.ingest_driver import ingest_many as ingest_many
from aggregator.ingest_driver import ingest_prepared as ingest_prepared
