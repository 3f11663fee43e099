"""The datasets: MNIST (``data.mnist``) and the one-electron systems (``data.schrodinger``).

Import the submodule you need; this package itself imports nothing heavy.
"""

from data.errors import DatasetError

__all__ = ["DatasetError"]
