"""Post-render hooks: what other apps add to a rendered email before it is
stored and sent, without messaging importing them (`messaging ← tracking`).

Tracking registers here (apps/tracking/links.py, from its AppConfig.ready):
it rewrites the email's links into click-tracking links, stores the
originals with the message, and adds the open pixel. The send path calls
`post_render` once the Message has its id and stores what it returns as the
message's HTML. On PostgreSQL that is before the message's row is inserted
(in the same savepoint, so a send that loses its key to a concurrent one
drops the hook's rows too): a hook's rows referencing the message rely on
the foreign key being checked at commit, as Django makes them.

    from apps.messaging import render_hooks
    message.html = render_hooks.post_render(message=message, html=rendered.html)

A hook is `fn(*, message, html) -> html`. Hooks run in the caller's
transaction and in registration order; an exception propagates (the send
fails rather than going out with links that lead nowhere). A hook may carry a
batch form as its `many` attribute, `fn.many(*, messages, htmls) -> htmls`,
which `post_render_many` (a batch of sends) calls once instead of the hook
once per message.

Context hooks add to the render context the same way (`messaging ← surveys`):
surveys adds `links.nps`, the eleven score links of an NPS survey. A context
hook is `fn(*, template, customer, message) -> mapping` of plain data; its
dicts merge into the context's (`{"links": {"nps": [...]}}` adds a link), and
the caller's own `context` is merged after them, so a send can pass the real
values a hook only has placeholders for (a survey step passes its
invitation's links; a preview gets the hook's preview links).
"""

from collections.abc import Callable, Mapping, Sequence
from typing import Any

PostRenderHook = Callable[..., str]

_hooks: list[PostRenderHook] = []


def on_render(fn: PostRenderHook) -> PostRenderHook:
    """Register `fn` (usable as a decorator); registering twice is a no-op."""
    if fn not in _hooks:
        _hooks.append(fn)
    return fn


def remove_hook(fn: PostRenderHook) -> None:
    if fn in _hooks:
        _hooks.remove(fn)


def post_render(*, message, html: str) -> str:
    """`html` as every registered hook leaves it, for the stored `message`."""
    for hook in list(_hooks):
        html = hook(message=message, html=html)
    return html


def post_render_many(items: Sequence[tuple[Any, str]]) -> list[str]:
    """`post_render` for many (message, html) pairs: each hook's batch form
    once if it has one, else the hook for each message."""
    messages = [message for message, _ in items]
    htmls = [html for _, html in items]
    for hook in list(_hooks):
        many = getattr(hook, "many", None)
        if many is not None:
            htmls = list(many(messages=messages, htmls=htmls))
        else:
            htmls = [hook(message=m, html=h) for m, h in zip(messages, htmls, strict=True)]
    return htmls


# --- context hooks ---------------------------------------------------------------

ContextHook = Callable[..., Mapping[str, Any]]

_context_hooks: list[ContextHook] = []


def on_context(fn: ContextHook) -> ContextHook:
    """Register a render context hook (usable as a decorator); twice is a no-op."""
    if fn not in _context_hooks:
        _context_hooks.append(fn)
    return fn


def remove_context_hook(fn: ContextHook) -> None:
    if fn in _context_hooks:
        _context_hooks.remove(fn)


def context_additions(*, template, customer, message) -> dict[str, Any]:
    """What every registered context hook adds, merged in registration order
    (a dict value merges into the same key's dict)."""
    added: dict[str, Any] = {}
    for hook in list(_context_hooks):
        for key, value in hook(template=template, customer=customer, message=message).items():
            if isinstance(added.get(key), dict) and isinstance(value, Mapping):
                added[key] = {**added[key], **value}
            else:
                added[key] = value
    return added
