#!/usr/bin/env python
"""Django's command-line utility for the django-llmstream demo site.

Run it with ``testproject/`` as the working directory: ``python manage.py migrate``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def main() -> None:
    # The checkout's root, so that ``django_llmstream`` imports from this checkout when the
    # package is not pip-installed. Appended: an installed copy keeps precedence (an editable
    # install points at this same directory anyway).
    repo_root = str(Path(__file__).resolve().parent.parent)
    if repo_root not in sys.path:
        sys.path.append(repo_root)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "testproject.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
