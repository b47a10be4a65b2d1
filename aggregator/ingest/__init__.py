"""The ingest core: a batch of new records (a feed's entries, an import) in three stages with
plain types between them (``types``):

- ``prepare`` (pure): a record -> its topic matches, fingerprint, filing time and exact keys;
- ``decide`` (pure): the in-memory ``window`` of recent records and developments, the exact
  duplicates the store holds, the prepared records in order, the options and ``now`` -> a
  ``Plan``: new records with their development, reason and score, aliases, new developments and
  refreshes (representative, title, summary, topics), one result per record;
- apply (``aggregator.store``, ``WriteTx.apply``): writes the plan in one transaction, SQL only.

``aggregator.pipeline.ingest_many`` runs them in order under the ingest lock. One record is a
batch of one; a batch decides exactly as its records one after another would.
"""
