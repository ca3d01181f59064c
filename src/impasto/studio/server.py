"""``impasto serve``: the studio on uvicorn. It binds the socket itself (so ``--port 0`` picks
a free port and a port in use is one line), prints the address, and serves until Ctrl-C,
which stops a running run before its next step with its best image kept."""
from __future__ import annotations

import os
import secrets
import socket
import sys
import threading
from pathlib import Path

from ..errors import UserError
from .security import is_loopback

DEFAULT_PORT = 8765


def default_data_dir() -> Path:
    """$IMPASTO_STUDIO_DATA, else $XDG_DATA_HOME/impasto/studio, else
    ~/.local/share/impasto/studio."""
    if os.environ.get("IMPASTO_STUDIO_DATA"):
        return Path(os.environ["IMPASTO_STUDIO_DATA"]).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "impasto" / "studio"


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as e:
        sock.close()
        if e.errno in (98, 48):     # EADDRINUSE on Linux, macOS
            raise UserError(f"--port {port}: the port is in use (another studio?); choose "
                            "another with --port N, or --port 0 for any free one") from None
        raise UserError(f"--host {host}: cannot listen there ({e.strerror})") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def url_host(host: str) -> str:
    return f"[{host.strip('[]')}]" if ":" in host.strip("[]") else host


def serve(args) -> int:
    import uvicorn

    from .app import create_app
    host = args.host
    loopback = is_loopback(host)
    token = args.token or (None if loopback else secrets.token_urlsafe(24))
    if args.max_upload_mb <= 0:
        raise UserError(f"--max-upload-mb: must be positive, got {args.max_upload_mb}")
    if args.max_input_pixels < 1:
        raise UserError(f"--max-input-pixels: must be a positive whole number, got "
                        f"{args.max_input_pixels}")
    data = Path(args.data).expanduser() if args.data else default_data_dir()
    sock = bind(host, args.port)          # first: a port in use leaves no folder behind
    try:
        data.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        sock.close()
        raise UserError(f"--data {data}: cannot create the folder ({e.strerror})") from None
    port = sock.getsockname()[1]
    app = create_app(data, host=host, port=port, token=token,
                     max_upload_bytes=int(args.max_upload_mb * 2**20),
                     max_input_pixels=args.max_input_pixels)
    url = f"http://{url_host(host)}:{port}/" + (f"?token={token}" if token else "")
    if not loopback:
        print(f"impasto serve: warning: listening on {host}, not only this machine: anyone who "
              "can reach it and has the token can run jobs and see every image in "
              f"{data}", file=sys.stderr, flush=True)
    print(f"impasto studio at {url}  (data in {data}; Ctrl-C stops)", flush=True)
    if args.open:
        import webbrowser
        threading.Timer(0.5, webbrowser.open, args=(url,)).start()
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False,
                                           timeout_graceful_shutdown=5))
    server.run(sockets=[sock])
    return 0
