"""One module per command verb; each exposes `run(cfg, ...) -> exit status`."""
