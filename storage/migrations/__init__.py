"""Alembic migrations for Statuary's database. `storage.db.upgrade(engine)` runs them; the app
does so at start-up. New schema change: add versions/NNNN_what.py with revision "NNNN"."""
