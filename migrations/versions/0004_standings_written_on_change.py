"""standings written only on change: programs carry their latest evaluation; standings.values nullable; drop evaluation_runs.metric_count

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04 16:30:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('programs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('evaluated_as_of', sa.Date(), nullable=True))
        batch_op.add_column(sa.Column('evaluated_mark', sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column('evaluated_run_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('evaluated_at', sa.DateTime(timezone=True), nullable=True))

    with op.batch_alter_table('standings', schema=None) as batch_op:
        batch_op.alter_column('values', existing_type=sa.JSON(), nullable=True)

    # Not in batch mode: rebuilding evaluation_runs on SQLite would drop a table that
    # level_changes refers to. SQLite drops a column in place since 3.35.
    op.execute("ALTER TABLE evaluation_runs DROP COLUMN metric_count")

    # Each program's latest finished run, so pages of a database evaluated before this
    # migration explain its standings as of that run.
    op.execute(
        "UPDATE programs SET evaluated_as_of = r.as_of, evaluated_mark = r.metric_mark, evaluated_run_id = r.id, "
        "evaluated_at = r.finished_at "
        "FROM (SELECT DISTINCT program_key, "
        "      FIRST_VALUE(id) OVER w AS id, FIRST_VALUE(as_of) OVER w AS as_of, "
        "      FIRST_VALUE(metric_mark) OVER w AS metric_mark, FIRST_VALUE(finished_at) OVER w AS finished_at "
        "      FROM evaluation_runs WHERE status = 'done' "
        "      WINDOW w AS (PARTITION BY program_key ORDER BY as_of DESC, id DESC)) AS r "
        "WHERE r.program_key = programs.key"
    )


def downgrade() -> None:
    op.add_column('evaluation_runs', sa.Column('metric_count', sa.BigInteger(), nullable=True))

    op.execute("UPDATE standings SET \"values\" = '{}' WHERE \"values\" IS NULL")
    with op.batch_alter_table('standings', schema=None) as batch_op:
        batch_op.alter_column('values', existing_type=sa.JSON(), nullable=False)

    with op.batch_alter_table('programs', schema=None) as batch_op:
        batch_op.drop_column('evaluated_at')
        batch_op.drop_column('evaluated_run_id')
        batch_op.drop_column('evaluated_mark')
        batch_op.drop_column('evaluated_as_of')
