"""pytest-folio: a throwaway Folio server for a test session.

Fixtures:

- ``folio_server`` (session scope): a :class:`FolioServer` started with
  ``folio serve --in-memory --port 0 --exit-on-stdin-close``; its ``uri`` is the JSON ready
  line's (``mongodb://127.0.0.1:PORT/?replicaSet=rs0``).
- ``folio`` (function scope): a ``pymongo.MongoClient`` connected to it, closed after the test.

The binary is ``--folio-bin``, else ``$FOLIO_BIN``, else ``$CARGO_TARGET_DIR/release/folio`` or a
``target/release/folio`` in the working directory or one of its parents. Because the server exits
when its standard input closes, it never outlives the pytest process, even one that is killed.
"""

import json
import os
import pathlib
import subprocess
import threading

import pytest
from pymongo import MongoClient


def find_binary(explicit=None):
    """Locates the folio binary (see the module docstring)."""
    if explicit:
        return explicit
    if os.environ.get("FOLIO_BIN"):
        return os.environ["FOLIO_BIN"]
    candidates = []
    if os.environ.get("CARGO_TARGET_DIR"):
        candidates.append(pathlib.Path(os.environ["CARGO_TARGET_DIR"]) / "release" / "folio")
    for start in (pathlib.Path.cwd(), pathlib.Path(__file__).resolve().parent):
        for directory in (start, *start.parents):
            candidates.append(directory / "target" / "release" / "folio")
    for candidate in candidates:
        if candidate.is_file():
            return str(candidate)
    raise RuntimeError(
        "pytest-folio: no folio binary found; set FOLIO_BIN or build one with "
        "`cargo build --release -p folio-cli`"
    )


class FolioServer:
    """A ``folio serve`` process in memory on a port the system chooses."""

    def __init__(self, binary=None, repl_set="rs0", args=(), start_timeout=30.0):
        self.binary = find_binary(binary)
        self.repl_set = repl_set
        self.args = list(args)
        self.start_timeout = start_timeout
        self.process = None
        self.uri = None
        self.port = None

    def start(self):
        """Starts the server and waits for its JSON ready line."""
        cmd = [self.binary, "serve", "--in-memory", "--port", "0", "--replSet", self.repl_set,
               "--exit-on-stdin-close", *self.args]
        self.process = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        ready = {}

        def read_ready():
            for line in self.process.stdout:
                if line.startswith("{"):
                    try:
                        parsed = json.loads(line)
                    except ValueError:
                        continue
                    if parsed.get("ready"):
                        ready.update(parsed)
                        break

        reader = threading.Thread(target=read_ready, daemon=True)
        reader.start()
        reader.join(self.start_timeout)
        if not ready:
            self.process.kill()
            _, err = self.process.communicate()
            raise RuntimeError(f"pytest-folio: the server did not become ready: {err[-4000:]}")
        self.uri = ready["uri"]
        self.port = ready["port"]
        return self

    def client(self, **kwargs):
        """A new MongoClient on this server."""
        kwargs.setdefault("serverSelectionTimeoutMS", 15000)
        return MongoClient(self.uri, **kwargs)

    def stop(self, timeout=10.0):
        """Stops the server (SIGTERM, then SIGKILL) and waits for it to exit."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            if stream:
                stream.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def pytest_addoption(parser):
    parser.addoption("--folio-bin", default=None, help="the folio binary pytest-folio starts")


@pytest.fixture(scope="session")
def folio_server(request):
    """One Folio server for the whole test session."""
    with FolioServer(binary=request.config.getoption("--folio-bin")) as server:
        yield server


@pytest.fixture
def folio(folio_server):
    """A pymongo MongoClient connected to the session's Folio server."""
    client = folio_server.client()
    yield client
    client.close()
