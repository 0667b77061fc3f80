#!/usr/bin/env python3
"""A ClickHouse HTTP-protocol front end over chdb, the real ClickHouse engine in-process.

No ClickHouse server with BACKUP ... TO S3 can be installed on the test machines, so the
integration tests talk to this: every statement (SQL, BACKUP, RESTORE, system tables) runs in
the real engine; this file only speaks the HTTP protocol the Rust `clickhouse` crate uses:

- the query in the POST body (or the `query` URL parameter; with both, the body follows the
  query text, as for INSERT ... FORMAT with data),
- `database` and `default_format` URL parameters,
- user and password from X-ClickHouse-User/X-ClickHouse-Key, HTTP Basic auth or the
  `user`/`password` URL parameters, checked against the one configured user,
- errors as HTTP 500 (403 for authentication) with X-ClickHouse-Exception-Code and the
  engine's message as the body,
- GET /ping.

Anything else (query parameters, per-request settings, compressed bodies) is refused with
HTTP 501 and says so, rather than being silently ignored. Queries run one at a time on a
single chdb session; BACKUP/RESTORE ... ASYNC continue in the engine's background threads.

Usage: chdb_http.py --data DIR --port PORT --user USER --password-file FILE
"""

import argparse
import base64
import hmac
import re
import socket
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import chdb
from chdb import session as chdb_session

CODE = re.compile(r"Code: (\d+)\.")
PROTOCOL_PARAMS = {"query", "database", "default_format", "user", "password"}


class Engine:
    """One chdb session; statements are serialised because a session is not thread-safe."""

    def __init__(self, data_dir):
        self.session = chdb_session.Session(data_dir)
        self.lock = threading.Lock()

    def run(self, sql, database, output_format):
        with self.lock:
            database = database or "default"
            self.session.query(f"USE `{database.replace('`', '``')}`", "TSV")
            result = self.session.query(sql, output_format)
            return result.bytes() if result is not None else b""


def make_handler(engine, user, password):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "chdb-http"

        def setup(self):
            super().setup()
            # Without it every small response waits for the peer's delayed ACK (~40 ms).
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def log_message(self, fmt, *args):
            if self.server.verbose:
                sys.stderr.write("chdb_http: " + (fmt % args) + "\n")

        def send(self, status, body, headers=()):
            self.send_response(status)
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def fail(self, status, code, message):
            body = f"Code: {code}. DB::Exception: {message}\n".encode()
            self.send(status, body, [("X-ClickHouse-Exception-Code", str(code))])

        def credentials(self, params):
            got_user = self.headers.get("X-ClickHouse-User")
            got_password = self.headers.get("X-ClickHouse-Key")
            auth = self.headers.get("Authorization", "")
            if got_user is None and auth.startswith("Basic "):
                decoded = base64.b64decode(auth[6:]).decode("utf-8", "replace")
                got_user, _, got_password = decoded.partition(":")
            if got_user is None:
                got_user = params.get("user", "default")
                got_password = params.get("password", "")
            return got_user, got_password or ""

        def do_GET(self):
            if urllib.parse.urlsplit(self.path).path == "/ping":
                self.send(200, b"Ok.\n")
            else:
                self.handle_query()

        def do_POST(self):
            self.handle_query()

        def handle_query(self):
            url = urllib.parse.urlsplit(self.path)
            params = dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True))
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                return self.fail(501, 48, "chunked request bodies are not supported by chdb_http")
            got_user, got_password = self.credentials(params)
            if got_user != user or not hmac.compare_digest(got_password, password):
                return self.fail(
                    403, 516, f"{got_user}: Authentication failed: password is incorrect, "
                    "or there is no user with such name. (AUTHENTICATION_FAILED)")
            unsupported = sorted(k for k in params if k not in PROTOCOL_PARAMS)
            if self.headers.get("Content-Type", "").startswith("multipart/"):
                unsupported.append("multipart/form-data (query parameters)")
            if self.headers.get("Content-Encoding"):
                unsupported.append("Content-Encoding")
            if unsupported:
                return self.fail(501, 48, "chdb_http does not support: " + ", ".join(unsupported)
                                 + " (NOT_IMPLEMENTED)")
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError:
                return self.fail(501, 48, "chdb_http accepts only UTF-8 bodies (NOT_IMPLEMENTED)")
            sql = params["query"] + ("\n" + text if text else "") if "query" in params else text
            if not sql.strip():
                return self.fail(400, 62, "Empty query. (SYNTAX_ERROR)")
            output_format = params.get("default_format", "TabSeparated")
            try:
                result = engine.run(sql, params.get("database"), output_format)
            except Exception as error:  # the engine's own exception text, as a server sends it
                message = str(error)
                match = CODE.search(message)
                code = match.group(1) if match else "1001"
                body = (message if message.endswith("\n") else message + "\n").encode()
                return self.send(500, body, [("X-ClickHouse-Exception-Code", code)])
            self.send(200, result, [("X-ClickHouse-Format", output_format),
                                    ("Content-Type", "application/octet-stream")])

    return Handler


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="chdb data directory")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--password-file", required=True)
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args()
    with open(args.password_file, encoding="utf-8") as f:
        password = f.read().strip()
    engine = Engine(args.data)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), make_handler(engine, args.user, password))
    server.daemon_threads = True
    server.verbose = args.verbose
    version = engine.run("SELECT version()", None, "TSV").decode().strip()
    print(f"chdb_http: ClickHouse {version} (chdb {chdb.__version__}) on 127.0.0.1:{args.port}",
          file=sys.stderr, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
