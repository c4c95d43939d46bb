"""Conduit, the RealWorld example application, on db: FastAPI, SQLAlchemy 2 and the ``DB_*`` settings."""
