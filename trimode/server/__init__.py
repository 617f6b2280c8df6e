"""OpenAI-compatible HTTP server (``trimode serve``); needs the ``serve`` extra (fastapi, uvicorn)."""
