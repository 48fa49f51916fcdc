import os

LLMSTREAM = {
    "PROVIDERS": {
        "openai": {
            "BACKEND": "django_llmstream.providers.openai.OpenAIProvider",
            # Any OpenAI-compatible server: OpenAI itself, or a local one (with /v1).
            "BASE_URL": os.environ.get("OPENAI_BASE_URL", "https://api.openai.com/v1"),
            "API_KEY": os.environ.get("OPENAI_API_KEY", ""),
            "MODELS": [os.environ.get("OPENAI_MODEL", "gpt-4o-mini")],
            # Dollars per million tokens: each answer's cost is computed from them.
            "PRICES": {"gpt-4o-mini": {"input": "0.15", "output": "0.60"}},
        },
        "demo": {"BACKEND": "django_llmstream.providers.demo.DemoProvider"},
    },
    "DEFAULT_PROVIDER": "openai",
    "ALLOW_ANONYMOUS": True,
}
