"""The django-llmstream demo site.

Importing this package puts the checkout's root on ``sys.path``, so that the ASGI and WSGI
entry points (``uvicorn testproject.asgi:application`` run from ``testproject/``) find
``django_llmstream`` in the checkout even when the package is not pip-installed.
"""

from __future__ import annotations

import sys
from pathlib import Path

_REPO_ROOT = str(Path(__file__).resolve().parent.parent.parent)
if _REPO_ROOT not in sys.path:
    # Appended: an installed copy, or the working directory, keeps its precedence.
    sys.path.append(_REPO_ROOT)
