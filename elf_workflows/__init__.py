"""elf-workflows: compressed metal sublattices as chemical templates for superhydrides.

Data flow: structure → grid → field (SAD, DFT or surrogate ELF) → attractors → document → store.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("elf-workflows")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0+local"

__all__ = ["__version__"]
