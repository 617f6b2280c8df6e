"""Converting AR models into tri-mode models: objectives, data, trainer, export."""
