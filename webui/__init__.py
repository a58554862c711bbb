"""Statuary's web UI (Gradio). `webui.app.launch(service, store, settings)` serves it."""
