"""The ``emolens`` command: :mod:`emolens.cli.app` and one module per subcommand (thin adapters over the library).

Subcommand modules import the library inside their command functions, so ``emolens --help``
never pays for torch or transformers.
"""

from emolens.cli.app import app, main

__all__ = ["app", "main"]
