"""Initial schema: sources, fetch state, records, topic matches, fingerprints and their
LSH band / key term indexes, developments and memberships.

Revision ID: 0001
Revises: 
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import uuid

import sqlalchemy as sa
from alembic import op


revision: str = '0001'
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('fetch_state',
    sa.Column('source_id', sa.String(length=200), nullable=False),
    sa.Column('etag', sa.Text(), nullable=True),
    sa.Column('last_modified', sa.Text(), nullable=True),
    sa.Column('next_fetch', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_attempt', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_success', sa.DateTime(timezone=True), nullable=True),
    sa.Column('consecutive_failures', sa.Integer(), server_default='0', nullable=False),
    sa.Column('failure_class', sa.String(length=32), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('failure_counts', sa.JSON(), nullable=False),
    sa.Column('fetch_count', sa.Integer(), server_default='0', nullable=False),
    sa.Column('lease_owner', sa.String(length=200), nullable=True),
    sa.Column('lease_expires', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('source_id', name=op.f('pk_fetch_state'))
    )
    with op.batch_alter_table('fetch_state', schema=None) as batch_op:
        batch_op.create_index('ix_fetch_state_next_fetch', ['next_fetch'], unique=False)

    op.create_table('records',
    sa.Column('id', sa.String(length=16), nullable=False),
    sa.Column('seq', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('title', sa.Text(), nullable=False),
    sa.Column('url', sa.Text(), nullable=True),
    sa.Column('canonical_url', sa.Text(), nullable=True),
    sa.Column('guid', sa.Text(), nullable=True),
    sa.Column('source_id', sa.String(length=200), nullable=True),
    sa.Column('published', sa.DateTime(timezone=True), nullable=True),
    sa.Column('fetched', sa.DateTime(timezone=True), nullable=True),
    sa.Column('ingested', sa.DateTime(timezone=True), nullable=False),
    sa.Column('time', sa.DateTime(timezone=True), nullable=False),
    sa.Column('language', sa.String(length=35), nullable=True),
    sa.Column('author', sa.Text(), nullable=True),
    sa.Column('content_hash', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_records')),
    sa.UniqueConstraint('seq', name=op.f('uq_records_seq'))
    )
    with op.batch_alter_table('records', schema=None) as batch_op:
        batch_op.create_index('ix_records_canonical_url', ['canonical_url'], unique=False)
        batch_op.create_index('ix_records_content_hash', ['content_hash'], unique=False)
        batch_op.create_index('ix_records_source_id_guid', ['source_id', 'guid'], unique=False)
        batch_op.create_index('ix_records_time', ['time'], unique=False)

    op.create_table('sources',
    sa.Column('id', sa.String(length=200), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('url', sa.Text(), nullable=False),
    sa.Column('title', sa.Text(), server_default='', nullable=False),
    sa.Column('topics', sa.JSON(), nullable=False),
    sa.Column('enabled', sa.Boolean(), server_default=sa.true(), nullable=False),
    sa.Column('active', sa.Boolean(), server_default=sa.true(), nullable=False),
    sa.Column('updated', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_sources'))
    )
    store_meta = op.create_table('store_meta',
    sa.Column('id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('instance', sa.String(length=32), nullable=False),
    sa.Column('feed_version', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_store_meta'))
    )
    assert store_meta is not None
    op.bulk_insert(store_meta, [{'id': 1, 'instance': uuid.uuid4().hex, 'feed_version': 0}])
    op.create_table('developments',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('title', sa.Text(), nullable=False),
    sa.Column('summary', sa.Text(), nullable=False),
    sa.Column('first_seen', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated', sa.DateTime(timezone=True), nullable=False),
    sa.Column('representative_id', sa.String(length=16), nullable=True),
    sa.Column('merged_into', sa.String(length=32), nullable=True),
    sa.ForeignKeyConstraint(['merged_into'], ['developments.id'], name=op.f('fk_developments_merged_into_developments'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['representative_id'], ['records.id'], name=op.f('fk_developments_representative_id_records'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_developments'))
    )
    with op.batch_alter_table('developments', schema=None) as batch_op:
        batch_op.create_index('ix_developments_merged_into', ['merged_into'], unique=False)
        batch_op.create_index('ix_developments_updated', ['updated'], unique=False)

    op.create_table('fingerprints',
    sa.Column('record_id', sa.String(length=16), nullable=False),
    sa.Column('data', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['record_id'], ['records.id'], name=op.f('fk_fingerprints_record_id_records'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('record_id', name=op.f('pk_fingerprints'))
    )
    op.create_table('key_terms',
    sa.Column('term', sa.String(length=200), nullable=False),
    sa.Column('record_id', sa.String(length=16), nullable=False),
    sa.Column('time', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['record_id'], ['records.id'], name=op.f('fk_key_terms_record_id_records'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('term', 'record_id', name=op.f('pk_key_terms'))
    )
    with op.batch_alter_table('key_terms', schema=None) as batch_op:
        batch_op.create_index('ix_key_terms_record_id', ['record_id'], unique=False)
        batch_op.create_index('ix_key_terms_term_time', ['term', 'time'], unique=False)

    op.create_table('lsh_bands',
    sa.Column('band', sa.String(length=100), nullable=False),
    sa.Column('record_id', sa.String(length=16), nullable=False),
    sa.Column('time', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['record_id'], ['records.id'], name=op.f('fk_lsh_bands_record_id_records'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('band', 'record_id', name=op.f('pk_lsh_bands'))
    )
    with op.batch_alter_table('lsh_bands', schema=None) as batch_op:
        batch_op.create_index('ix_lsh_bands_band_time', ['band', 'time'], unique=False)
        batch_op.create_index('ix_lsh_bands_record_id', ['record_id'], unique=False)

    op.create_table('topic_matches',
    sa.Column('record_id', sa.String(length=16), nullable=False),
    sa.Column('topic_id', sa.String(length=200), nullable=False),
    sa.Column('terms', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['record_id'], ['records.id'], name=op.f('fk_topic_matches_record_id_records'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('record_id', 'topic_id', name=op.f('pk_topic_matches'))
    )
    with op.batch_alter_table('topic_matches', schema=None) as batch_op:
        batch_op.create_index('ix_topic_matches_topic_id', ['topic_id'], unique=False)

    op.create_table('development_topics',
    sa.Column('development_id', sa.String(length=32), nullable=False),
    sa.Column('topic_id', sa.String(length=200), nullable=False),
    sa.ForeignKeyConstraint(['development_id'], ['developments.id'], name=op.f('fk_development_topics_development_id_developments'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('development_id', 'topic_id', name=op.f('pk_development_topics'))
    )
    with op.batch_alter_table('development_topics', schema=None) as batch_op:
        batch_op.create_index('ix_development_topics_topic_id', ['topic_id'], unique=False)

    op.create_table('memberships',
    sa.Column('record_id', sa.String(length=16), nullable=False),
    sa.Column('development_id', sa.String(length=32), nullable=False),
    sa.Column('reason', sa.String(length=32), nullable=False),
    sa.Column('score', sa.Float(), nullable=False),
    sa.Column('matched_record_id', sa.String(length=16), nullable=True),
    sa.Column('manual', sa.Boolean(), server_default=sa.false(), nullable=False),
    sa.Column('joined', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['development_id'], ['developments.id'], name=op.f('fk_memberships_development_id_developments'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['record_id'], ['records.id'], name=op.f('fk_memberships_record_id_records'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('record_id', name=op.f('pk_memberships'))
    )
    with op.batch_alter_table('memberships', schema=None) as batch_op:
        batch_op.create_index('ix_memberships_development_id', ['development_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('memberships', schema=None) as batch_op:
        batch_op.drop_index('ix_memberships_development_id')

    op.drop_table('memberships')
    with op.batch_alter_table('development_topics', schema=None) as batch_op:
        batch_op.drop_index('ix_development_topics_topic_id')

    op.drop_table('development_topics')
    with op.batch_alter_table('topic_matches', schema=None) as batch_op:
        batch_op.drop_index('ix_topic_matches_topic_id')

    op.drop_table('topic_matches')
    with op.batch_alter_table('lsh_bands', schema=None) as batch_op:
        batch_op.drop_index('ix_lsh_bands_record_id')
        batch_op.drop_index('ix_lsh_bands_band_time')

    op.drop_table('lsh_bands')
    with op.batch_alter_table('key_terms', schema=None) as batch_op:
        batch_op.drop_index('ix_key_terms_term_time')
        batch_op.drop_index('ix_key_terms_record_id')

    op.drop_table('key_terms')
    op.drop_table('fingerprints')
    with op.batch_alter_table('developments', schema=None) as batch_op:
        batch_op.drop_index('ix_developments_updated')
        batch_op.drop_index('ix_developments_merged_into')

    op.drop_table('developments')
    op.drop_table('store_meta')
    op.drop_table('sources')
    with op.batch_alter_table('records', schema=None) as batch_op:
        batch_op.drop_index('ix_records_time')
        batch_op.drop_index('ix_records_source_id_guid')
        batch_op.drop_index('ix_records_content_hash')
        batch_op.drop_index('ix_records_canonical_url')

    op.drop_table('records')
    with op.batch_alter_table('fetch_state', schema=None) as batch_op:
        batch_op.drop_index('ix_fetch_state_next_fetch')

    op.drop_table('fetch_state')
