"""labctl: the lab's experiment database and compute job system.

The Python API (`dbquery`, `dblog`, ...) lives in `labctl.api`; it is imported lazily here so that
the command line starts without loading pandas.
"""

from typing import Any

__version__ = "0.1.0"
__all__ = ["dbjob", "dblog", "dbquery", "dbqueue_job", "dbrerun_job"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from labctl import api

        return getattr(api, name)
    raise AttributeError(f"module 'labctl' has no attribute {name!r}")
