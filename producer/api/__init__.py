"""The HTTP API and the web dashboard (``agentq-api``): FastAPI, on the Python client.

Needs the ``api`` extra (FastAPI, uvicorn); the CLI and the client never import this package.
"""
