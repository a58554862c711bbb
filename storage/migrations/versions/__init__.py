"""Numbered migrations: 0001_..., 0002_..., each revision id equal to its number."""
