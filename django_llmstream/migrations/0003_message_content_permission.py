# The permission that LLMSTREAM["HIDE_CONTENT_FROM_STAFF"] checks.

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("django_llmstream", "0002_lease"),
    ]

    operations = [
        migrations.AlterModelOptions(
            name="message",
            options={
                "ordering": ["created_at"],
                "permissions": [("view_message_content", "Can view message content")],
                "verbose_name": "message",
                "verbose_name_plural": "messages",
            },
        ),
    ]
