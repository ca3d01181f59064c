"""A real ``impasto serve`` in a subprocess on a free port, for the studio's tests (import the
``studio_server`` fixture from here)."""
from __future__ import annotations

import select
import signal
import subprocess
import sys
import time

import pytest


def start_server(tmp_path, *args, env=None):
    """``impasto serve --port 0`` (any free port) with a data folder under ``tmp_path``; returns
    (process, the address it printed, its first lines)."""
    cmd = [sys.executable, "-m", "impasto", "serve", "--port", "0",
           "--data", str(tmp_path / "studio-data"), *args]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline, lines = time.time() + 60, []
    while time.time() < deadline:
        ready, _, _ = select.select([proc.stdout, proc.stderr], [], [], 1)
        for stream in ready:
            line = stream.readline()
            if line:
                lines.append(line.rstrip("\n"))
            if stream is proc.stdout and "impasto studio at " in line:
                url = line.split("impasto studio at ", 1)[1].split()[0]
                # what it wrote to stderr before the address (a warning) may still be unread
                while select.select([proc.stderr], [], [], 0.5)[0]:
                    extra = proc.stderr.readline()
                    if not extra:
                        break
                    lines.append(extra.rstrip("\n"))
                return proc, url, lines
        if proc.poll() is not None:
            break
    proc.kill()
    raise AssertionError(f"the studio did not start: {lines} {proc.stderr.read()}")


def stop_server(proc, timeout=30):
    """Ctrl-C, as a person would; the exit status."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise
    return proc.returncode


@pytest.fixture
def studio_server(tmp_path, cli_env):
    """A running studio: (address, data folder, process); stopped with Ctrl-C afterwards."""
    env = dict(cli_env)
    proc, url, _ = start_server(tmp_path, env=env)
    yield url, tmp_path / "studio-data", proc
    assert stop_server(proc) == 0
