import os

from django.conf import settings
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler
from django.core.asgi import get_asgi_application

from django_llmstream.asgi import with_lifespan

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")

application = get_asgi_application()

if settings.DEBUG:
    # uvicorn serves no static files; in development, let Django serve them.
    application = ASGIStaticFilesHandler(application)

# When the server stops, answers being written get a few seconds to finish; the rest are
# saved as "interrupted" instead of being dropped.
application = with_lifespan(application)
