"""Settings of the worker processes of the quota test in tests/e2e/test_security.py: those of
tests.worker_settings, with ``LIMITS`` from ``LLMSTREAM_TEST_LIMITS`` (JSON) and the request
counter in the Redis cache that all workers share."""

from __future__ import annotations

import json
import os

from tests.worker_settings import *  # noqa: F403
from tests.worker_settings import LLMSTREAM as _WORKER_LLMSTREAM

LLMSTREAM = {
    **_WORKER_LLMSTREAM,
    "LIMITS": json.loads(os.environ.get("LLMSTREAM_TEST_LIMITS", "{}")),
}

CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": os.environ["REDIS_URL"],
        "KEY_PREFIX": os.environ["LLMSTREAM_TEST_REDIS_PREFIX"],
    }
}
