"""Reference server on :mod:`selectors`: one thread, non-blocking sockets (``python -m impl_select``)."""

from .server import SelectServer, run

__all__ = ["SelectServer", "run"]
