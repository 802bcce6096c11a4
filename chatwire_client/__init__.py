"""The terminal chat client: ``python -m chatwire_client --port P --name alice``.

:mod:`chatwire_client.session` is its sans-I/O core (protocol events to display lines,
typed lines to messages); :mod:`chatwire_client.link` runs a session over an asyncio stream;
:mod:`chatwire_client.interactive` (prompt_toolkit) and :mod:`chatwire_client.pipe` (for
scripts) are the two front ends.
"""

from .session import ChatSession, ExitStatus, Line, Step, Style, visible

__all__ = ["ChatSession", "ExitStatus", "Line", "Step", "Style", "visible"]
