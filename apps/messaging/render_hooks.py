"""Post-render hooks: what other apps add to a rendered email before it is
stored and sent, without messaging importing them (`messaging ← tracking`).

Tracking registers here (apps/tracking/links.py, from its AppConfig.ready):
it rewrites the email's links into click-tracking links, stores the
originals with the message, and adds the open pixel. The send path calls
`post_render` once the Message row exists (the hooks need its id) and stores
what it returns as the message's HTML.

    from apps.messaging import render_hooks
    message.html = render_hooks.post_render(message=message, html=rendered.html)

A hook is `fn(*, message, html) -> html`. Hooks run in the caller's
transaction and in registration order; an exception propagates (the send
fails rather than going out with links that lead nowhere).
"""

from collections.abc import Callable

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
