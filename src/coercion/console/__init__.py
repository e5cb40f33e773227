"""The node's web console: sign-in, overview, rules, metrics and a JSON API.

:class:`~coercion.console.server.ConsoleServer` runs it beside the node
(``coercion serve``); the pages are Jinja2 templates in ``templates/`` with one
script in ``static/``. The package itself imports nothing, so that commands
other than ``serve`` do not load the web framework.
"""
