"""The node's web console: sign-in, overview, rules, metrics and a JSON API.

:class:`ConsoleServer` runs it beside the node (``coercion serve``); the
pages are Jinja2 templates in ``templates/`` with one script in ``static/``.
"""

from coercion.console.server import ConsoleServer, HttpSettings

__all__ = ["ConsoleServer", "HttpSettings"]
