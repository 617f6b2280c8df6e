"""Training: turn an AR checkpoint into a tri-mode one (data, objectives, trainer, export)."""
