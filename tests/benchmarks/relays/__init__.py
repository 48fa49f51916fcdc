"""The baseline relays: bare proxies that persist nothing, measured against django-llmstream."""
