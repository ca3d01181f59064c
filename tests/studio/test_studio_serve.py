"""``impasto serve`` itself: it prints its address, answers, refuses another host without the
token (and warns about it), says in one line when the port is taken, and ends on Ctrl-C with
status 0."""
from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request

import pytest

from studio_server import start_server, stop_server

pytest.importorskip("uvicorn")


def get(url, headers=None):
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_serve_prints_its_address_and_stops_on_ctrl_c(tmp_path, cli_env):
    proc, url, lines = start_server(tmp_path, env=cli_env)
    try:
        assert url.startswith("http://127.0.0.1:") and url.endswith("/")
        status, body = get(url + "api/status")
        assert status == 200 and body["queued"] == 0
        assert (tmp_path / "studio-data" / "uploads").is_dir()
        status, body = get(url + "api/status", {"Origin": "http://evil.example"})
        assert status == 403
    finally:
        assert stop_server(proc) == 0
    assert "warning" not in " ".join(lines)


def test_another_host_warns_and_needs_the_printed_token(tmp_path, cli_env):
    proc, url, lines = start_server(tmp_path, "--host", "0.0.0.0", env=cli_env)
    try:
        assert "?token=" in url
        warning = [line for line in lines if "warning" in line]
        assert warning and "listening on 0.0.0.0" in warning[0]
        token = url.split("?token=", 1)[1]
        port = url.split(":")[2].split("/")[0]
        base = f"http://127.0.0.1:{port}/api/status"
        assert get(base)[0] == 401
        assert get(base, {"Authorization": f"Bearer {token}"})[0] == 200
    finally:
        assert stop_server(proc) == 0


def test_a_port_in_use_is_one_line(run_cli, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        proc = run_cli("serve", "--port", port, "--data", tmp_path / "d", timeout=60)
    assert proc.returncode == 2
    assert not (tmp_path / "d").exists()
    assert proc.stderr.strip() == (f"impasto: error: --port {port}: the port is in use (another "
                                   "studio?); choose another with --port N, or --port 0 for any "
                                   "free one")
