"""Sphinx configuration for the multistore user guide."""

project = "multistore"
copyright = "2026, the multistore developers"
extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
    "oslo_config.sphinxext",
]
autodoc_member_order = "bysource"
autodoc_typehints = "description"
exclude_patterns = ["build"]
html_theme = "alabaster"
