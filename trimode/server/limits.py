"""The server's default limits, in a module with no imports, so that building the CLI's parser
(every ``trimode`` command) does not import uvicorn or fastapi to read them."""

HEADER_TIMEOUT = 10.0  # seconds for a request's headers, from the connection or the previous response
BODY_TIMEOUT = 30.0  # seconds a request body may pause
MAX_BODY_BYTES = 16 * 2**20  # 64 prompts of a few thousand token ids fit; a 50 MiB paste does not
