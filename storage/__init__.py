"""Statuary's storage: every generation recorded, reproducible and variable by its image's id.

    store = open_store(load_settings())      # migrates the database, marks crashed jobs
    service = InProcessJobService(generator, recorder=store, ...)
    store.reproduce("k7x2m9qa", service, owner); store.history(query="cat")

See README_SECTION.md for the data dir layout, database settings and backups.
"""

from storage.db import StoreUnavailable
from storage.pngmeta import BadMetadata, parse_a1111, read_recipe
from storage.records import GenerationRecord, ImageRecord, NotFound, NotYours, Page, VerifyResult
from storage.store import Store, open_store

__all__ = ["BadMetadata", "GenerationRecord", "ImageRecord", "NotFound", "NotYours", "Page", "Store",
           "StoreUnavailable", "VerifyResult", "open_store", "parse_a1111", "read_recipe"]
