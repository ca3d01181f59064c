"""``impasto serve``: start the studio (``impasto.studio``), a local web page and JSON API on
the same run API as the command line. It needs the ``web`` extra."""
from __future__ import annotations

from ..errors import UserError


def run(args, argv, interrupt=None) -> int:
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as e:
        raise UserError(f"impasto serve needs the web extra ({e.name} is not installed): "
                        "pip install 'impasto[web]'") from None
    from ..studio import server
    try:
        return server.serve(args)
    except KeyboardInterrupt:      # uvicorn hands Ctrl-C on once it has shut down
        return 0
