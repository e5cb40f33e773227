"""Where a node keeps its data when neither the command line nor the directory says.

The data folder holds the embedded pseudonym store, the forwarding queues,
the worklist and the directory snapshot. It is relative to the working
directory, like git's ``.git``: ``--data`` or the device's
``coercionDataDirectory`` put it elsewhere.
"""

from __future__ import annotations

import os

__all__ = ["DATA_DIRECTORY", "STORE_URL", "sqlite_store_url"]

#: The data folder when neither ``--data`` nor the device's coercionDataDirectory says.
DATA_DIRECTORY = ".coercion/data"


def sqlite_store_url(data_directory: str | os.PathLike[str]) -> str:
    """The URL of the embedded store in *data_directory*: ``sqlite:///DATA/store.db``."""
    return f"sqlite:///{os.fspath(data_directory)}/store.db"


#: The pseudonym store when neither ``--store`` nor the directory names one.
STORE_URL = sqlite_store_url(DATA_DIRECTORY)
