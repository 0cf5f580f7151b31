"""Alembic environment: Portal runs migrations programmatically (`portal init`), passing a
connection in ``config.attributes``; the plain `alembic` command works too with -x url=..."""

from alembic import context

from portal.migrate import include_object_for
from portal.models import Base

config = context.config
target_metadata = Base.metadata


def run() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True,
                          include_object=include_object_for(connection.dialect.name))
        with context.begin_transaction():
            context.run_migrations()
        return
    from portal.db import make_engine

    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    engine = make_engine(url)
    with engine.connect() as conn:
        context.configure(connection=conn, target_metadata=target_metadata, render_as_batch=True,
                          include_object=include_object_for(conn.dialect.name))
        with context.begin_transaction():
            context.run_migrations()


run()
