"""Statuary's generator and job service.

Front-ends import `core.request`, `core.settings` and `core.service`; only the service's
implementation touches torch and diffusers, and nothing here loads a model at import time.
"""

__version__ = "0.1.0"
