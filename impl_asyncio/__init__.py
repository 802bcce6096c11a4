"""Reference server on :mod:`asyncio` protocols and transports (``python -m impl_asyncio``)."""

from .server import AsyncioServer, run

__all__ = ["AsyncioServer", "run"]
