"""The playground's HTTP server: the page, its assets and a small JSON API, standard library only.

API (every answer is JSON; errors are ``{"error": message}``)::

    POST /api/session                 settings (JSON object, may be {}) -> 200 snapshot
    GET  /api/session/ID              -> the latest snapshot (the page polls this)
    POST /api/session/ID/config       settings -> snapshot (optimizer-only changes keep
                                      training; others rebuild data and network, paused)
    POST /api/session/ID/reset        settings or {} -> snapshot, new weights, paused
    POST /api/session/ID/play | pause | step | lecture | close

A snapshot is described in session.py (design note 5). Status codes: 400 for a bad request
(malformed JSON, unknown setting or value out of range, an action the session refuses), 403 for
a Host header that does not name this loopback server, 404 for an unknown path or an expired
session, 413 for a body over ``MAX_BODY`` bytes, 503 when ``max_sessions`` are open.

Design notes
1. ``ThreadingHTTPServer`` answers each request in its own thread; the sessions train in
   theirs. A request never waits for more than one training chunk (session.py, note 4).
2. Sessions expire ``ttl`` seconds after their last poll; a reaper thread closes them, and the
   page also closes its session explicitly on ``pagehide`` (``navigator.sendBeacon``). With at
   most ``max_sessions`` sessions of at most 7-8-8-8-8-8-8-1 units, memory stays bounded.
3. On a loopback address the server answers only requests whose Host header is a loopback name
   (localhost, [::1]) or an IPv4 literal in 127.0.0.0/8: a web page elsewhere cannot reach it
   through a DNS name that resolves to 127.0.0.1 (a name that only starts with "127.", such as
   127.0.0.1.attacker.example, passed an earlier check). Any other ``host`` is the user's
   explicit choice (the CLI warns).
4. Static files are the ones shipped in ``static/``, looked up by exact name in a table made at
   start; nothing in a request path is joined onto a file system path.
"""
import ipaddress
import json
import mimetypes
import os
import re
import sys
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from fastmlp.playground.session import BadRequest, Session, parse_config

MAX_BODY = 64 * 1024
DEFAULT_TTL = 90.0
DEFAULT_MAX_SESSIONS = 64
STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
_LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]", "::1")
_DIGITS = re.compile(r"[0-9]+")


def _is_loopback_ip(name):
    """Whether name is an IPv4 address in 127.0.0.0/8 written as one (a DNS name that only
    starts with "127." is not: 127.0.0.1.attacker.example passed the old check)."""
    try:
        return ipaddress.IPv4Address(name).is_loopback
    except ValueError:
        return False
_ACTIONS = ("play", "pause", "step", "lecture", "close", "config", "reset")


def is_loopback(host):
    """Whether an address to listen on is this machine only (an IPv4 literal in 127/8, ::1,
    localhost); a name that only starts with "127." resolves wherever its owner says."""
    return host in ("localhost", "::1") or _is_loopback_ip(host)


class _HTTPError(Exception):
    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


class SessionStore:
    """The open sessions by id, with expiry (design note 2)."""

    def __init__(self, ttl=DEFAULT_TTL, max_sessions=DEFAULT_MAX_SESSIONS):
        self.ttl = float(ttl)
        self.max_sessions = int(max_sessions)
        self._sessions = {}
        self._starting = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._reaper = threading.Thread(target=self._reap, name="playground-reaper",
                                        daemon=True)
        self._reaper.start()

    def create(self, raw):
        config = parse_config(raw)
        with self._lock:  # a place is reserved first, so concurrent creations keep the limit
            if len(self._sessions) + self._starting >= self.max_sessions:
                raise _HTTPError(HTTPStatus.SERVICE_UNAVAILABLE,
                                 f"{self.max_sessions} sessions are open; close a tab or "
                                 f"wait {self.ttl:g} s for idle ones to expire")
            self._starting += 1
        try:
            session = Session(config)
        except BaseException:
            with self._lock:
                self._starting -= 1
            raise
        with self._lock:
            self._starting -= 1
            self._sessions[session.id] = session
        return session

    def get(self, sid):
        with self._lock:
            session = self._sessions.get(sid)
        if session is None or session.closed:
            raise _HTTPError(HTTPStatus.NOT_FOUND, f"no session {sid!r} (it may have expired "
                             f"after {self.ttl:g} s without a poll); reload the page")
        return session

    def close(self, sid):
        with self._lock:
            session = self._sessions.pop(sid, None)
        if session is not None:
            session.close()

    def __len__(self):
        with self._lock:
            return len(self._sessions)

    def _reap(self):
        while not self._stop.wait(min(1.0, self.ttl / 4)):
            now = time.monotonic()
            with self._lock:
                old = [sid for sid, s in self._sessions.items() if now - s.last_seen > self.ttl]
            for sid in old:
                self.close(sid)

    def close_all(self):
        self._stop.set()
        with self._lock:
            sids = list(self._sessions)
        for sid in sids:
            self.close(sid)


class PlaygroundServer(ThreadingHTTPServer):
    """The HTTP server with its sessions; ``serve_forever()`` runs it, ``close()`` stops all.

    Parameters
    ----------
    host : str
        Address to bind; 127.0.0.1 by default.
    port : int
        0 picks a free port; ``server_address[1]`` tells which.
    ttl, max_sessions : float, int
        Seconds a session lives without a poll; how many may be open at once.
    """

    daemon_threads = True
    allow_reuse_address = True
    # socketserver's default backlog of 5 reset connections when many tabs opened sessions at
    # once (the accept loop waits for the GIL while sessions train); the kernel caps this.
    request_queue_size = 128

    def handle_error(self, request, client_address):
        """A client that goes away mid-request (a closed tab) is normal, not an error to
        print; anything else is reported as socketserver does."""
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)

    def __init__(self, host="127.0.0.1", port=0, ttl=DEFAULT_TTL,
                 max_sessions=DEFAULT_MAX_SESSIONS):
        super().__init__((host, port), _Handler)
        self.loopback_only = is_loopback(host)
        self.store = SessionStore(ttl, max_sessions)
        self.static = _static_table(STATIC_DIR)

    @property
    def url(self):
        host, port = self.server_address[:2]
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port}/"

    def close(self):
        """Stop serving (when ``serve_forever`` runs in another thread) and end all sessions."""
        self.shutdown()
        self.server_close()
        self.store.close_all()


def _static_table(folder):
    """{"/name": (bytes, content type)} for the files shipped in ``static/``."""
    table = {}
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if os.path.isfile(path) and not name.startswith("."):
            with open(path, "rb") as f:
                data = f.read()
            ctype = mimetypes.guess_type(name)[0] or "application/octet-stream"
            if ctype.startswith("text/") or ctype.endswith("javascript"):
                ctype += "; charset=utf-8"
            table["/static/" + name] = (data, ctype)
    table["/"] = table["/static/index.html"]
    return table


class _Handler(BaseHTTPRequestHandler):
    server_version = "fastmlp-playground"
    protocol_version = "HTTP/1.1"
    timeout = 30   # seconds a connection may stay silent before its thread lets it go

    def log_message(self, format, *args):  # quiet: the CLI prints the address only
        pass

    # ------------------------------------------------------------ dispatch

    def do_GET(self):
        self._handle("GET")

    def do_POST(self):
        self._handle("POST")

    def do_HEAD(self):  # a GET's status and headers, without its body
        self._head = True
        try:
            self._handle("GET")
        finally:
            self._head = False  # the connection's next request is answered in full

    def _not_allowed(self):  # every answer is JSON, this one too (not the library's HTML 501)
        self._handle(self.command)

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _not_allowed

    def _handle(self, method):
        raw = None
        try:
            self._check_host()
            path = urlsplit(self.path).path
            raw = self._read_body()   # read whatever the method, so the next request parses
            if method not in ("GET", "POST"):
                raise _HTTPError(HTTPStatus.METHOD_NOT_ALLOWED, f"{method} is not served "
                                 f"here: the playground answers GET, HEAD and POST")
            if path.startswith("/api/"):
                body = self._parse_json(raw) if method == "POST" else None
                status, payload = self._api(method, path, body)
                self._send(status, payload, "application/json")
            elif method == "GET" and path in self.server.static:
                data, ctype = self.server.static[path]
                self._send(HTTPStatus.OK, data, ctype)
            else:
                raise _HTTPError(HTTPStatus.NOT_FOUND, f"no such page: {path}")
        except _HTTPError as e:
            if raw is None:
                self.close_connection = True   # the body is left unread: end the connection
            self._send_error(e.status, str(e))
        except BadRequest as e:
            self._send_error(HTTPStatus.BAD_REQUEST, str(e))
        except (ConnectionError, TimeoutError):
            self.close_connection = True
        except Exception:  # a bug: answer 500, log it, keep serving
            import traceback
            traceback.print_exc()
            self._send_error(HTTPStatus.INTERNAL_SERVER_ERROR, "internal error (logged by "
                             "the server)")

    def _check_host(self):
        if not self.server.loopback_only:
            return
        hosts = self.headers.get_all("Host") or [""]
        if len(hosts) > 1:  # RFC 9112: a request with more than one Host is refused
            self.close_connection = True
            raise _HTTPError(HTTPStatus.BAD_REQUEST, "the request has more than one Host")
        # A request line with an absolute URL names the host it is for: it must pass too
        # (found by a new user: its host was ignored).
        names = [hosts[0]] + [urlsplit(self.path).netloc] * self.path.startswith(("http:",
                                                                                 "https:"))
        for host in (h.strip().lower() for h in names):
            name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
            if name not in _LOOPBACK_NAMES and not _is_loopback_ip(name):
                raise _HTTPError(HTTPStatus.FORBIDDEN, f"this playground answers requests for "
                                 f"127.0.0.1 only, not for host {host!r}")

    def _read_body(self):
        """The request's body (bytes, maybe empty), at most MAX_BODY of them."""
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            raise _HTTPError(HTTPStatus.BAD_REQUEST, "send the body with a Content-Length, "
                             "not in chunks")
        lengths = set(self.headers.get_all("Content-Length") or ())
        if len(lengths) > 1:  # RFC 9112: a message with differing lengths is refused
            self.close_connection = True
            raise _HTTPError(HTTPStatus.BAD_REQUEST, "the request has more than one "
                             "Content-Length")
        length = self.headers.get("Content-Length")
        if length is None:
            return b""
        if not _DIGITS.fullmatch(length.strip()):  # RFC 9112: digits only (int() took -0, +2)
            self.close_connection = True
            raise _HTTPError(HTTPStatus.BAD_REQUEST, f"bad Content-Length {length!r}")
        n = int(length)
        if n > MAX_BODY:
            self.close_connection = True
            raise _HTTPError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                             f"the request body has {n} bytes; at most {MAX_BODY} are taken")
        return self.rfile.read(n)

    @staticmethod
    def _parse_json(raw):
        """The JSON value of a body; None for an empty one."""
        if not raw.strip():
            return None
        try:
            return json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            raise BadRequest(f"the request body is not valid JSON: {e}") from None
        except RecursionError:  # a body nested deeper than the parser's stack
            raise BadRequest("the request body is JSON nested too deeply") from None

    def _api(self, method, path, body):
        parts = path.strip("/").split("/")   # ["api", "session", ID, ACTION]
        store = self.server.store
        if parts[:2] != ["api", "session"] or len(parts) > 4:
            raise _HTTPError(HTTPStatus.NOT_FOUND, f"no such API path: {path}")
        if len(parts) == 2:
            if method != "POST":
                raise BadRequest("POST /api/session with the settings creates a session")
            return HTTPStatus.OK, store.create({} if body is None else body).snapshot()
        session = store.get(parts[2])
        if len(parts) == 3:
            if method != "GET":
                raise BadRequest(f"GET {path} returns the session's latest state")
            return HTTPStatus.OK, session.snapshot()
        action = parts[3]
        if method != "POST" or action not in _ACTIONS:
            raise _HTTPError(HTTPStatus.NOT_FOUND, f"no such action: {method} {path}; "
                             f"actions (POST) are {', '.join(_ACTIONS)}")
        if action == "close":
            store.close(session.id)
            return HTTPStatus.OK, b'{"closed":true}'
        if action in ("config", "reset"):
            if body is not None and not isinstance(body, dict):
                raise BadRequest(f"the settings must be a JSON object, got "
                                 f"{type(body).__name__}")
            snap = session.configure(body or {}) if action == "config" else \
                session.reset(body)
        elif action == "lecture":
            snap = session.load_lecture()
        else:
            snap = session.control(action)
        session.last_seen = time.monotonic()
        return HTTPStatus.OK, snap

    # ------------------------------------------------------------ answers

    def _send(self, status, data, ctype):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        if status == HTTPStatus.METHOD_NOT_ALLOWED:
            self.send_header("Allow", "GET, HEAD, POST")
        self.end_headers()
        if not getattr(self, "_head", False):
            self.wfile.write(data)

    def _send_error(self, status, message):
        data = json.dumps({"error": message}).encode("utf-8")
        try:
            self._send(status, data, "application/json")
        except (ConnectionError, TimeoutError):
            self.close_connection = True


class OutputError(OSError):
    """The playground's address could not be written (its output failed)."""


def serve(host="127.0.0.1", port=0, open_browser=False, out=None):
    """Run the playground until Ctrl-C; prints the address to ``out`` (stdout by default)."""
    import sys
    import webbrowser

    out = out or sys.stdout or sys.stderr  # with stdout closed, the address goes to stderr
    server = PlaygroundServer(host, port)
    try:
        try:
            print(f"fastmlp playground: serving at {server.url} (Ctrl-C stops)", file=out,
                  flush=True)
        except OSError as e:  # not the socket's failure: the CLI must not say "cannot listen"
            raise OutputError(e.errno, f"cannot write the address ({server.url}): "
                                       f"{e.strerror}") from None
        if open_browser:
            webbrowser.open(server.url)
        server.serve_forever(poll_interval=0.25)
    except KeyboardInterrupt:
        print("fastmlp playground: stopped", file=out, flush=True)
    finally:
        server.server_close()
        server.store.close_all()
