"""metric_rows: the event index holds only rows with an event id; SQLite drops the (metric, date) index

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06 03:30:00

Both make an import maintain less (docs/performance.md, round 9). SQLite cannot drop a table's
UNIQUE constraint in place, so there the table is rebuilt (its rows and ids kept): on a large
database this upgrade takes minutes, about as long as copying the table.
"""
from alembic import op
import sqlalchemy as sa

from portal.models.metrics import EVENT_ROWS, SQLITE_TRIGGERS


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

EVENT_COLUMNS = ['member_id', 'metric', 'event_id']


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        with op.batch_alter_table('metric_rows', schema=None, recreate='always') as batch_op:
            batch_op.drop_constraint('uq_metric_rows_event', type_='unique')
            batch_op.drop_index('ix_metric_rows_metric_date_member')
        for sql in SQLITE_TRIGGERS:  # dropped with the old table
            op.execute(sql)
    else:
        op.drop_constraint('uq_metric_rows_event', 'metric_rows', type_='unique')
    op.create_index('uq_metric_rows_event', 'metric_rows', EVENT_COLUMNS, unique=True,
                    sqlite_where=sa.text(EVENT_ROWS), postgresql_where=sa.text(EVENT_ROWS))


def downgrade() -> None:
    op.drop_index('uq_metric_rows_event', table_name='metric_rows')
    if op.get_bind().dialect.name == "sqlite":
        with op.batch_alter_table('metric_rows', schema=None, recreate='always') as batch_op:
            batch_op.create_unique_constraint('uq_metric_rows_event', EVENT_COLUMNS)
            batch_op.create_index('ix_metric_rows_metric_date_member', ['metric', 'date', 'member_id'])
        for sql in SQLITE_TRIGGERS:
            op.execute(sql)
    else:
        op.create_unique_constraint('uq_metric_rows_event', 'metric_rows', EVENT_COLUMNS)
