"""The one exception type of the data package.

Everything that goes wrong with data on disk (a missing, truncated or altered file, a bad header,
an .npz whose contents are not what they claim to be) is reported as a :class:`DatasetError`
whose message names the file, what was expected, what was found and how to fix it.
"""

from __future__ import annotations


class DatasetError(OSError):
    """A dataset file is missing, unreadable, corrupted or inconsistent.

    A subclass of :class:`OSError` because it is about files on disk: callers that already handle
    I/O failures handle it too, and it is never mistaken for bad *user input* (``ValueError``).
    """
