"""Code that mirrors a framework's or library's internals for speed.

Every piece of Tenure that copies or leans on another project's private
internals lives here, one module per upstream piece. Each module's docstring
names the upstream internals it mirrors and the version it was written
against, and says what it saves (measured). Each has a test under
``tests/core/mirrors/`` that fails when the upstream changes underneath it.
A mirror that saves less than 5% of its path is not kept.
"""
