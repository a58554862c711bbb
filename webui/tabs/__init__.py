"""The web UI's tabs, one module each; each `build(ui)` lays out its tab and wires its own events."""
