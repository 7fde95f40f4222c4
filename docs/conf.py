"""Sphinx configuration for the Flask-JWT-Shield documentation."""

from __future__ import annotations

import importlib.metadata

project = "Flask-JWT-Shield"
author = "Flask-JWT-Shield contributors"
copyright = "the Flask-JWT-Shield contributors"

try:
    release = importlib.metadata.version("Flask-JWT-Shield")
except importlib.metadata.PackageNotFoundError:  # building from a checkout without install
    release = "0.1.0.dev0"
version = ".".join(release.split(".")[:2])

# No sphinx.ext.intersphinx: the docs build offline.
extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
]

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented_params"
autodoc_preserve_defaults = True

exclude_patterns = ["_build"]
templates_path: list[str] = []

html_theme = "furo"
html_title = f"Flask-JWT-Shield {release}"
html_static_path: list[str] = []
