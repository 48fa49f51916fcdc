LLMSTREAM = {
    "PROVIDERS": {
        # Offline: streams a canned answer word by word, no key, no network.
        "demo": {"BACKEND": "django_llmstream.providers.demo.DemoProvider"},
    },
    # Visitors who are not logged in may chat too; their conversations belong to their
    # session. Leave it out (False) to keep the chat for logged-in users.
    "ALLOW_ANONYMOUS": True,
}
