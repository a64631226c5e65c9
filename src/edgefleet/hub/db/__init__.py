"""The hub's persistence: the only package that imports SQLAlchemy and Alembic."""

from edgefleet.hub.db.store import Store, Tx

__all__ = ["Store", "Tx"]
