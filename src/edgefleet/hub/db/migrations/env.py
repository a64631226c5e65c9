"""Alembic environment: runs migrations on the connection `hub.db.migrate` hands over."""

from alembic import context

from edgefleet.hub.db.models import Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
