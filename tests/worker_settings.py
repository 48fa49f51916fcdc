"""Settings of the worker processes of the end-to-end tests that start their own servers.

They share the test run's database (passed as JSON in LLMSTREAM_TEST_DATABASE) and Redis, and
call the test run's fake upstream.
"""

from __future__ import annotations

import json
import os

from tests.settings import *  # noqa: F403

DATABASES = {"default": json.loads(os.environ["LLMSTREAM_TEST_DATABASE"])}

LLMSTREAM = {
    "PROVIDERS": {
        "openai": {
            "BACKEND": "django_llmstream.providers.openai.OpenAIProvider",
            "BASE_URL": os.environ["LLMSTREAM_TEST_UPSTREAM"],
            "MODELS": ["fake-model"],
        },
    },
    "SHUTDOWN_DRAIN_SECONDS": float(os.environ.get("LLMSTREAM_TEST_DRAIN", "10")),
    "ALLOW_ANONYMOUS": True,
    "FLUSH_INTERVAL": 0.05,
    "HEARTBEAT_SECONDS": 0.5,
    "LEASE_SECONDS": 2,
    "IDLE_TIMEOUT": 30,
    "MAX_RETRIES": 0,
    "ON_DISCONNECT": "finish",
}

if os.environ.get("REDIS_URL"):
    LLMSTREAM["BROKER"] = {
        "BACKEND": "django_llmstream.brokers.redis.RedisBroker",
        "LOCATION": os.environ["REDIS_URL"],
        "OPTIONS": {"PREFIX": os.environ["LLMSTREAM_TEST_REDIS_PREFIX"]},
    }
