from __future__ import annotations

# tests.upstream: the fake provider servers; tests.live: the uvicorn server and its client.
pytest_plugins = ["tests.upstream", "tests.live"]
