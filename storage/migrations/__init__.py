"""Alembic migrations for Statuary's database. `storage.db.upgrade(engine)` runs them; the app
does so at start-up. New schema change: add versions/NNNN_what.py whose revision id starts
with NNNN, numbered above and chained after the current head (one line, numbers rising;
a test checks). bot/community.py added 0100, so the next revision is 0101 or above."""
