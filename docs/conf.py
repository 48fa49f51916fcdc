"""Sphinx configuration of the django-llmstream documentation.

Build: ``python -m sphinx -W --keep-going -b html docs docs/_build/html`` from the repository
root. No extension needs the network or an external program.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# autodoc imports the package, whose modules import Django models and settings.
os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"

import django  # noqa: E402

django.setup()

import django_llmstream  # noqa: E402

project = "django-llmstream"
author = "django-llmstream developers"
copyright = "django-llmstream developers"
version = release = django_llmstream.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
]

root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
templates_path: list[str] = []

nitpicky = False
default_role = "literal"
highlight_language = "none"

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_default_options = {"members": True, "show-inheritance": True}

html_theme = "furo"
html_title = f"django-llmstream {release}"
html_static_path: list[str] = []
