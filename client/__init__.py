"""The terminal chat client: ``python -m client --port P --name alice``.

:mod:`client.session` is its sans-I/O core (protocol events to display lines, typed lines to
messages); :mod:`client.link` runs a session over an asyncio stream; :mod:`client.interactive`
(prompt_toolkit) and :mod:`client.pipe` (for scripts) are the two front ends.
"""

from .session import ChatSession, ExitStatus, Line, Step, Style, visible

__all__ = ["ChatSession", "ExitStatus", "Line", "Step", "Style", "visible"]
