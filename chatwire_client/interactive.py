"""Interactive mode: a prompt_toolkit input line, with the conversation printed above it.

Received lines are printed above the prompt while the user types, so incoming messages never
garble a half-typed line. Ctrl-D or Ctrl-C at the prompt, or /quit, leave cleanly.

A name is always asked for with no connection open: after a refusal the client leaves, asks
for another name, then connects again, so the server's hello timeout (§7.4) cannot expire
while the user is typing.
"""

from __future__ import annotations

import asyncio
import contextlib

from prompt_toolkit import PromptSession, print_formatted_text
from prompt_toolkit.formatted_text import FormattedText
from prompt_toolkit.patch_stdout import patch_stdout
from prompt_toolkit.styles import Style as PromptStyle

from protocol import Codec

from .link import Link, Server
from .session import ChatSession, ExitStatus, Line, Style, visible

STYLE = PromptStyle.from_dict(
    {
        Style.CHAT.value: "",
        Style.OWN.value: "ansibrightblack",
        Style.NOTICE.value: "ansicyan",
        Style.STATUS.value: "ansicyan bold",
        Style.ERROR.value: "ansired bold",
        "prompt": "ansigreen bold",
    }
)


def show(line: Line) -> None:
    print_formatted_text(FormattedText([(f"class:{line.style.value}", line.text)]), style=STYLE)


async def ask_name(prompt: PromptSession[str], question: str) -> str | None:
    """A name typed by the user, or ``None`` if they gave up (Ctrl-C, Ctrl-D)."""
    while True:
        try:
            name = (await prompt.prompt_async(FormattedText([("class:prompt", question)]))).strip()
        except (EOFError, KeyboardInterrupt):
            return None
        if name:
            return name


async def run_interactive(server: Server, name: str | None, codec: Codec, timeout: float) -> ExitStatus:
    """Join (asking for another name while the server refuses one), then chat until the end.

    Raises :class:`~chatwire_client.link.NoAnswer` if connecting or the welcome takes longer
    than ``timeout`` seconds.
    """
    # Each typed line is erased when entered: the session's echo (or a command's output) replaces it.
    prompt: PromptSession[str] = PromptSession(style=STYLE, erase_when_done=True)
    with patch_stdout():
        if name is None:
            name = await ask_name(prompt, "your name: ")
        while name is not None:
            session = ChatSession(codec, echo=True, token=server.token, tls=server.tls is not None)
            link = await Link.open(server, session, show, timeout)
            receiving = asyncio.create_task(link.run())
            try:
                status = await _attempt(prompt, link, session, name, timeout)
                if status is not None:
                    return status
            finally:
                session.quit()
                await link.close()
                receiving.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await receiving
            name = await ask_name(prompt, "try another name: ")
    return ExitStatus.OK


async def _attempt(
    prompt: PromptSession[str], link: Link, session: ChatSession, name: str, timeout: float
) -> ExitStatus | None:
    """Join as ``name`` and chat: the exit status, or ``None`` if the name was refused."""
    await link.send(session.hello(name))
    await link.expect(lambda: session.hello_answered, timeout, "welcome")
    if session.joined:
        await chat(prompt, link, session)
        return session.status or ExitStatus.OK
    if session.refusal is None:  # the session ended: shutdown, an error, a lost connection
        return session.status or ExitStatus.CONNECTION_LOST
    return None


async def chat(prompt: PromptSession[str], link: Link, session: ChatSession) -> None:
    """Read and carry out the user's lines until they leave or the session ends."""
    show(Line(Style.NOTICE, "* type /help for commands"))
    typing = asyncio.create_task(_type(prompt, link, session))
    ending = asyncio.create_task(link.until(lambda: session.finished))
    try:
        await asyncio.wait((typing, ending), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (typing, ending):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def _type(prompt: PromptSession[str], link: Link, session: ChatSession) -> None:
    assert session.welcome is not None
    message = FormattedText([("class:prompt", f"{visible(session.welcome.name)}> ")])
    while not session.finished:
        try:
            text = await prompt.prompt_async(message)
        except (EOFError, KeyboardInterrupt):
            session.quit()
            return
        step = session.command(text)
        for line in step.lines:
            show(line)
        await link.send(step.send)
