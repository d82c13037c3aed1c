"""Sphinx configuration for the skvi documentation.

Build from the repository root with
``python -m sphinx -b html docs docs/_build/html -W --keep-going``
(see README.md).
"""

import skvi

# -- Project -----------------------------------------------------------------

project = "skvi"
author = "the skvi developers"
copyright = "the skvi developers"
release = skvi.__version__
version = ".".join(release.split(".")[:2])

# -- General -----------------------------------------------------------------

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
]

root_doc = "index"
exclude_patterns = ["_build", "README.md"]
# Single backticks render as inline code, as in the docstrings.
default_role = "code"

# api.rst lists each object by hand (autoclass / autofunction); autosummary
# only draws the summary tables, so no stub pages are generated.
autosummary_generate = False
autodoc_member_order = "bysource"

# numpydoc renders the Parameters / Attributes / Returns sections. Methods are
# listed explicitly in api.rst rather than in generated member tables.
numpydoc_show_class_members = False
numpydoc_show_inherited_class_members = False
numpydoc_class_members_toctree = False

# -- Gallery -----------------------------------------------------------------

sphinx_gallery_conf = {
    "examples_dirs": "../examples",
    "gallery_dirs": "auto_examples",
    "filename_pattern": "/plot_",
    "within_subsection_order": "FileNameSortKey",
    # An example that raises fails the build instead of rendering a traceback.
    "abort_on_example_error": True,
    # Keep the source tree clean: no sg_execution_times.rst pages.
    "write_computation_times": False,
}

# -- HTML --------------------------------------------------------------------

html_theme = "alabaster"
html_title = f"skvi {release}"
html_theme_options = {
    "description": "Gaussian mixtures by EM and variational inference "
    "on one exact ELBO",
    "fixed_sidebar": True,
    "page_width": "1100px",
    "sidebar_width": "230px",
}
