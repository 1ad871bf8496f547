"""A loopback HTTP/1.1 fault-injection proxy for the S3 tests (stdlib only: threads + sockets).

    client (ckptlake, boto3)  --->  FaultProxy 127.0.0.1:<port>  --->  SeaweedFS

The client is pointed at the proxy as its S3 endpoint (AWS_ENDPOINT_URL / --endpoint-url).  The
proxy forwards every request unchanged -- including the Host header, which SigV4 signs -- so
SeaweedFS verifies the signature the client computed for the proxy's address.  It parses just
enough HTTP/1.1 to find message boundaries (request and response heads; Content-Length and
chunked bodies; HEAD/1xx/204/304 responses without a body; bodies delimited by close), so it can
act on individual requests of a keep-alive connection, and it relays `Expect: 100-continue`
exchanges as they happen.  Each client connection gets its own upstream connection (1:1), so
keep-alive on one side is keep-alive on the other.

Faults, switchable at run time from the test thread (every method is thread-safe):

* ``drop(direction, after=N, ...)``: cut the connection after N body bytes -- of the request
  body ("up": PutObject/UploadPart) or of the response body ("down": GetObject).
* ``stall(direction, seconds=T, after=N, ...)``: pause that body for T seconds at byte N, then
  continue normally.
* ``slowdown(...)``: answer `503 SlowDown` with an S3 XML error body instead of forwarding.
* ``vanish(...)``: the client dies right after a request head -- the server sees the head and a
  clean close before any body byte (a kill -9 in that instant, made deterministic).
* ``down(mode)`` / ``up()``: the server is gone -- every live connection is cut and new ones are
  reset on accept ("reset") or refused because nothing listens any more ("refuse").

All of them take the same selectors: ``count`` (fire for the next K matching requests; None =
no limit), ``probability`` (fire for each match with probability p, seeded), ``methods``,
``path`` (a regex searched in the request target), ``skip`` (let the first M matches through:
a burst in the middle of a transfer) and ``max_per_target`` (never hit the same method+target
more than this many times, so a test can keep every request within the client's retry budget
and be deterministic).

Closes are passed on faithfully: a client that closes (or dies with nothing unread) gives the
server a clean close, a client that resets gives it a reset.

Counters (``stats()``): body bytes that went through in each direction (``bytes_up``: request
bodies forwarded to the server; ``bytes_down``: response bodies delivered to the client),
requests by method, responses by status, faults fired by kind, connections accepted/cut.
"""
from __future__ import annotations

import random
import re
import select
import socket
import struct
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Iterable
from urllib.parse import urlsplit

_BUF = 256 * 1024
_HEAD_LIMIT = 64 * 1024
_NO_BODY_STATUS = (204, 304)

SLOWDOWN_BODY = ('<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
                 '<Message>Please reduce your request rate.</Message><Resource>{resource}'
                 '</Resource><RequestId>{request_id}</RequestId></Error>')


class _Abort(Exception):
    """Tear the connection pair down: a fault fired, a peer went away, or the proxy stops.

    hard: reset the client connection (RST) rather than close it (FIN).
    """

    def __init__(self, message: str, *, hard: bool = True) -> None:
        super().__init__(message)
        self.hard = hard


# ---- fault rules -------------------------------------------------------------------------------

@dataclass
class Rule:
    kind: str  # "drop" | "stall" | "slowdown" | "vanish"
    direction: str | None = None  # "up" (request body) / "down" (response body) / None
    after: int = 0  # body offset at which drop/stall acts
    seconds: float = 0.0  # stall length
    count: int | None = None  # fire at most this many times (None: unlimited)
    probability: float | None = None
    methods: frozenset[str] | None = None
    path: re.Pattern[str] | None = None
    skip: int = 0  # matching requests to let through before the rule becomes active
    max_per_target: int | None = None
    fired: int = 0
    _per_target: Counter[str] = field(default_factory=Counter)

    def matches(self, method: str, target: str) -> bool:
        if self.methods is not None and method not in self.methods:
            return False
        return self.path is None or self.path.search(target) is not None


@dataclass(frozen=True)
class Stats:
    bytes_up: int
    bytes_down: int
    requests: dict[str, int]
    statuses: dict[int, int]
    faults: dict[str, int]
    connections: int

    @property
    def total_requests(self) -> int:
        return sum(self.requests.values())


@dataclass
class Exchange:
    """One request as the proxy saw it (``FaultProxy.exchanges()``), for debugging a test."""

    method: str
    target: str
    fault: str | None = None
    status: int | None = None
    bytes_up: int = 0
    bytes_down: int = 0
    outcome: str = "in progress"  # "ok", or why the connection ended mid-exchange
    headers: list[tuple[str, str]] = field(default_factory=list, repr=False)


@dataclass
class _Pair:
    """A client connection and the upstream connection that serves it (opened lazily)."""

    client: "_Sock"
    upstream: "_Sock | None" = None
    current: Exchange | None = None


@dataclass
class _Plan:
    """A drop or stall picked for one body."""

    rule: Rule
    at: int
    done: bool = False


# ---- buffered socket ---------------------------------------------------------------------------

class _Sock:
    """A socket with a read buffer, enough to read HTTP heads, chunk lines and bodies."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()

    def _fill(self) -> bool:
        data = self.sock.recv(_BUF)
        if not data:
            return False
        self.buf += data
        return True

    def read_until(self, sep: bytes, *, eof_ok: bool = False) -> bytes | None:
        start = 0
        while True:
            i = self.buf.find(sep, start)
            if i >= 0:
                out = bytes(self.buf[:i + len(sep)])
                del self.buf[:i + len(sep)]
                return out
            if len(self.buf) > _HEAD_LIMIT:
                raise _Abort("head or chunk line too long")
            start = max(0, len(self.buf) - len(sep) + 1)
            if not self._fill():
                if eof_ok and not self.buf:
                    return None
                raise _Abort("connection closed inside a message head")

    def read_some(self, n: int) -> bytes:
        """Up to n bytes (at least 1); _Abort at EOF."""
        if self.buf:
            out = bytes(self.buf[:n])
            del self.buf[:n]
            return out
        data = self.sock.recv(min(n, _BUF))
        if not data:
            raise _Abort("connection closed inside a body")
        return data

    def read_to_eof(self) -> Iterable[bytes]:
        if self.buf:
            out = bytes(self.buf)
            self.buf.clear()
            yield out
        while data := self.sock.recv(_BUF):
            yield data

    def readable_or_closed(self) -> bool:
        """For an idle keep-alive connection: did the peer close it (or send junk)?"""
        if self.buf:
            return True
        r, _, _ = select.select([self.sock], [], [], 0)
        return bool(r)

    def sendall(self, data: bytes | memoryview) -> None:
        self.sock.sendall(data)


def _parse_head(head: bytes) -> tuple[list[str], list[tuple[str, str]]]:
    lines = head[:-4].decode("latin-1").split("\r\n")
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.append((name.strip(), value.strip()))
    return lines[0].split(" ", 2), headers


def _header(headers: list[tuple[str, str]], name: str) -> str | None:
    name = name.lower()
    for k, v in headers:
        if k.lower() == name:
            return v
    return None


def _framing(headers: list[tuple[str, str]]) -> tuple[str, int]:
    """("chunked", 0), ("length", n) or ("none", 0) for a message that may carry a body."""
    te = _header(headers, "transfer-encoding")
    if te and "chunked" in te.lower():
        return "chunked", 0
    cl = _header(headers, "content-length")
    if cl is not None:
        return "length", int(cl)
    return "none", 0


def _wants_close(headers: list[tuple[str, str]]) -> bool:
    return "close" in (_header(headers, "connection") or "").lower()


def _hard_close(sock: socket.socket) -> None:
    """Close with RST (SO_LINGER 0): what a crashed or overloaded server looks like."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


# ---- the proxy ---------------------------------------------------------------------------------

class FaultProxy:
    """See the module docstring.  Use as a context manager, or start()/stop()."""

    def __init__(self, upstream_url: str, *, seed: int = 0) -> None:
        parts = urlsplit(upstream_url)
        if parts.scheme != "http" or not parts.hostname or not parts.port:
            raise ValueError(f"upstream must be http://host:port, not {upstream_url!r}")
        self.upstream = (parts.hostname, parts.port)
        self._lock = threading.Lock()
        self._rules: list[Rule] = []
        self._rng = random.Random(seed)
        self._down: str | None = None
        self._stopping = threading.Event()
        self._live: dict[socket.socket, bool] = {}  # socket -> is it an upstream connection
        self._threads: list[threading.Thread] = []
        self._listener: socket.socket | None = None
        self._accept_thread: threading.Thread | None = None
        self.port = 0
        self._request_ids = 0
        self.reset_stats()

    # -- lifecycle ------------------------------------------------------------------------------

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "FaultProxy":
        self._listener = self._listen(0)
        self.port = self._listener.getsockname()[1]
        self._accept_thread = threading.Thread(target=self._accept_loop, name="faultproxy-accept",
                                               daemon=True)
        self._accept_thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._accept_thread is not None:
            self._accept_thread.join(timeout=5)
        self._cut_all()
        with self._lock:
            threads = list(self._threads)
        for t in threads:
            t.join(timeout=5)

    def __enter__(self) -> "FaultProxy":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _listen(self, port: int) -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        s.listen(128)
        return s

    # -- control (any thread) -------------------------------------------------------------------

    def _add(self, rule: Rule) -> Rule:
        with self._lock:
            self._rules.append(rule)
        return rule

    @staticmethod
    def _selectors(count: int | None, probability: float | None, methods: Iterable[str] | None,
                   path: str | None, skip: int, max_per_target: int | None) -> dict:
        if count is None and probability is None:
            raise ValueError("give count=K and/or probability=p")
        return dict(count=count, probability=probability,
                    methods=frozenset(m.upper() for m in methods) if methods else None,
                    path=re.compile(path) if path else None, skip=skip,
                    max_per_target=max_per_target)

    def drop(self, direction: str, *, after: int, count: int | None = None,
             probability: float | None = None, methods: Iterable[str] | None = None,
             path: str | None = None, skip: int = 0, max_per_target: int | None = None) -> Rule:
        """Cut the connection after `after` bytes of the request ("up") / response ("down") body.

        Only bodies longer than `after` match, so every match really is cut mid-body.
        """
        if direction not in ("up", "down"):
            raise ValueError(direction)
        return self._add(Rule("drop", direction, after=after, **self._selectors(
            count, probability, methods, path, skip, max_per_target)))

    def stall(self, direction: str, *, seconds: float, after: int = 0, count: int | None = None,
              probability: float | None = None, methods: Iterable[str] | None = None,
              path: str | None = None, skip: int = 0,
              max_per_target: int | None = None) -> Rule:
        """Pause the body for `seconds` once `after` bytes have gone through, then go on."""
        if direction not in ("up", "down"):
            raise ValueError(direction)
        return self._add(Rule("stall", direction, after=after, seconds=seconds, **self._selectors(
            count, probability, methods, path, skip, max_per_target)))

    def slowdown(self, *, count: int | None = None, probability: float | None = None,
                 methods: Iterable[str] | None = None, path: str | None = None, skip: int = 0,
                 max_per_target: int | None = None) -> Rule:
        """Answer `503 SlowDown` (S3's XML error) instead of forwarding the request."""
        return self._add(Rule("slowdown", **self._selectors(count, probability, methods, path,
                                                            skip, max_per_target)))

    def vanish(self, *, count: int | None = None, probability: float | None = None,
               methods: Iterable[str] | None = None, path: str | None = None, skip: int = 0,
               max_per_target: int | None = None) -> Rule:
        """The client dies right after sending a request head: the server gets the head (and,
        if asked, sends 100 Continue) and then a clean close before any body byte; the client's
        own connection is left hanging, unanswered, until it goes away (kill it)."""
        return self._add(Rule("vanish", **self._selectors(count, probability, methods, path,
                                                          skip, max_per_target)))

    def clear_faults(self) -> None:
        with self._lock:
            self._rules.clear()

    def down(self, mode: str = "reset") -> None:
        """The server dies: live connections are cut; new ones are reset or refused."""
        if mode not in ("reset", "refuse"):
            raise ValueError(mode)
        with self._lock:
            self._down = mode
        self._cut_all()

    def up(self) -> None:
        with self._lock:
            self._down = None

    def reset_stats(self) -> None:
        with self._lock:
            self._bytes = {"up": 0, "down": 0}
            self._requests: Counter[str] = Counter()
            self._statuses: Counter[int] = Counter()
            self._faults: Counter[str] = Counter()
            self._connections = 0
            self._exchanges: list[Exchange] = []

    def stats(self) -> Stats:
        with self._lock:
            return Stats(bytes_up=self._bytes["up"], bytes_down=self._bytes["down"],
                         requests=dict(self._requests), statuses=dict(self._statuses),
                         faults=dict(self._faults), connections=self._connections)

    def wait_for(self, predicate: Callable[[Stats], bool], *, timeout: float,
                 poll: float = 0.005, alive: Callable[[], bool] = lambda: True) -> Stats:
        """Poll stats until predicate(stats) holds; TimeoutError, or RuntimeError if not alive()."""
        deadline = time.monotonic() + timeout
        while True:
            s = self.stats()
            if predicate(s):
                return s
            if not alive():
                raise RuntimeError(f"gave up waiting: the client is gone; {s}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"condition not reached within {timeout} s; {s}")
            time.sleep(poll)

    # -- internals: bookkeeping -----------------------------------------------------------------

    def _count(self, direction: str, n: int) -> None:
        with self._lock:
            self._bytes[direction] += n

    def _pick(self, kinds: tuple[str, ...], direction: str | None, method: str,
              target: str, body_length: int | None = None) -> Rule | None:
        """The first active rule that fires for this request (consumes one of its `count`).

        `body_length` (None: unknown) -- a drop/stall only fires on a body longer than its
        `after`, so every fault that is counted really happens mid-body.
        """
        key = f"{method} {target}"
        with self._lock:
            for rule in self._rules:
                if rule.kind not in kinds or rule.direction != direction \
                        or not rule.matches(method, target):
                    continue
                if body_length is not None and body_length <= rule.after:
                    continue
                if rule.count is not None and rule.fired >= rule.count:
                    continue
                if rule.skip > 0:
                    rule.skip -= 1
                    continue
                if rule.max_per_target is not None \
                        and rule._per_target[key] >= rule.max_per_target:
                    continue
                if rule.probability is not None and self._rng.random() >= rule.probability:
                    continue
                rule.fired += 1
                rule._per_target[key] += 1
                self._faults[rule.kind] += 1
                return rule
        return None

    def _register(self, sock: socket.socket, *, upstream: bool = False) -> None:
        with self._lock:
            self._live[sock] = upstream

    def _unregister(self, sock: socket.socket) -> None:
        with self._lock:
            self._live.pop(sock, None)

    def _cut_all(self) -> None:
        """Wake every connection thread so that it tears its pair down.

        The client side is shut down (the client sees the connection end).  The server side
        is made to end with a reset, not a clean close: a server that dies loses the requests
        in flight; a clean close would tell it "the client sent all it had"."""
        with self._lock:
            live = list(self._live.items())
        for s, upstream in live:
            try:
                if upstream:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    s.shutdown(socket.SHUT_RD)  # wakes its reader; the close then resets
                else:
                    s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    # -- internals: accepting -------------------------------------------------------------------

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            with self._lock:
                down = self._down
            if down == "refuse" and self._listener is not None:
                self._listener.close()  # nothing listens: connect() gets ECONNREFUSED
                self._listener = None
            if down != "refuse" and self._listener is None:
                try:
                    self._listener = self._listen(self.port)
                except OSError:
                    time.sleep(0.05)
                    continue
            if self._listener is None:
                time.sleep(0.02)
                continue
            r, _, _ = select.select([self._listener], [], [], 0.05)
            if not r:
                continue
            try:
                conn, _ = self._listener.accept()
            except OSError:
                continue
            with self._lock:
                down = self._down
                self._connections += 1
            if down is not None:
                with self._lock:
                    self._faults["reset"] += 1
                _hard_close(conn)
                continue
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True,
                                 name=f"faultproxy-conn-{self._connections}")
            with self._lock:
                self._threads = [x for x in self._threads if x.is_alive()]
                self._threads.append(t)
            t.start()
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    # -- internals: one client connection -------------------------------------------------------

    def _serve(self, conn: socket.socket) -> None:
        pair = _Pair(_Sock(conn))
        self._register(conn)
        hard = upstream_hard = False
        try:
            while not self._stopping.is_set():
                up = pair.upstream
                if up is not None and up.readable_or_closed():
                    self._unregister(up.sock)  # the server closed the idle connection
                    up.sock.close()
                    pair.upstream = None
                keep, hard = self._one_exchange(pair)
                if not keep:
                    break
        except _Abort as exc:
            hard = exc.hard
            self._end(pair, f"aborted: {exc}")
        except OSError as exc:
            # A reset (the client was killed with unread data, say): pass it on as a reset,
            # as a plain TCP path would -- a clean close would tell the server something else.
            hard = upstream_hard = True
            self._end(pair, f"{type(exc).__name__}: {exc}")
        finally:
            self._unregister(conn)
            if pair.upstream is not None:
                self._unregister(pair.upstream.sock)
                if upstream_hard:
                    _hard_close(pair.upstream.sock)
                else:
                    pair.upstream.sock.close()
            if hard:
                _hard_close(conn)
            else:
                conn.close()

    def _end(self, pair: _Pair, outcome: str) -> None:
        if pair.current is not None and pair.current.outcome == "in progress":
            pair.current.outcome = outcome
        pair.current = None

    def exchanges(self) -> list[Exchange]:
        """Every request seen since the last reset_stats(), oldest first."""
        with self._lock:
            return list(self._exchanges)

    def _connect_upstream(self) -> _Sock:
        s = socket.create_connection(self.upstream, timeout=10)
        s.settimeout(None)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._register(s, upstream=True)
        return _Sock(s)

    def _one_exchange(self, pair: _Pair) -> tuple[bool, bool]:
        """Relay one request and its response.  Returns (keep the connection, hard close)."""
        client = pair.client
        head = client.read_until(b"\r\n\r\n", eof_ok=True)
        if head is None:
            return False, False
        (method, target, *_), headers = _parse_head(head)
        method = method.upper()
        ex = pair.current = Exchange(method, target, headers=headers)
        with self._lock:
            self._requests[method] += 1
            self._exchanges.append(ex)
            down = self._down
        if down is not None:
            with self._lock:
                self._faults["reset"] += 1
            self._end(pair, "reset: server down")
            return False, True
        framing, length = _framing(headers)
        expect = "100-continue" in (_header(headers, "expect") or "").lower()
        close_after = _wants_close(headers)

        if self._pick(("slowdown",), None, method, target) is not None:
            ex.fault, ex.status = "slowdown", 503
            keep = self._answer_slowdown(pair, method, target, framing, length, expect,
                                         close_after)
            self._end(pair, "ok")
            return keep and not close_after, False

        if (framing == "chunked" or length > 0) \
                and self._pick(("vanish",), None, method, target) is not None:
            ex.fault = "vanish"
            self._vanish(pair, head, expect)
            self._end(pair, "vanished")
            return False, False

        up_plan = None
        if framing == "chunked" or length > 0:
            rule = self._pick(("drop", "stall"), "up", method, target,
                              None if framing == "chunked" else length)
            if rule is not None:
                up_plan = _Plan(rule, rule.after)
                ex.fault = f"{rule.kind} up at {rule.after}"

        if pair.upstream is None:
            pair.upstream = self._connect_upstream()
        upstream = pair.upstream
        upstream.sendall(head)

        # Expect: 100-continue -- relay the server's interim answer; a server that sends none
        # within a second gets the body anyway, as clients do (RFC 9110, 10.1.1).
        if expect and (upstream.buf or select.select([upstream.sock], [], [], 1.0)[0]):
            status, rhead, rheaders = self._read_response_head(upstream, forward_to=None)
            if status == 100:
                with self._lock:
                    self._statuses[100] += 1
                client.sendall(rhead)
            else:  # refused before the body was sent: pass the answer on and start afresh
                ex.status = status
                self._relay_response(pair, method, status, rhead, rheaders, plan=None)
                self._end(pair, "ok")
                return False, False
        if framing != "none" or length:
            self._relay_body(client, upstream, framing, length, "up", up_plan, ex)

        status, rhead, rheaders = self._read_response_head(upstream, forward_to=client)
        ex.status = status
        rframing, rlength = _framing(rheaders)
        down_plan = None
        if method != "HEAD" and 200 <= status < 300 and status not in _NO_BODY_STATUS \
                and (rframing != "length" or rlength > 0):
            rule = self._pick(("drop", "stall"), "down", method, target,
                              rlength if rframing == "length" else None)
            if rule is not None:
                down_plan = _Plan(rule, rule.after)
                ex.fault = f"{rule.kind} down at {rule.after}"
        until_close = self._relay_response(pair, method, status, rhead, rheaders,
                                           plan=down_plan)
        self._end(pair, "ok")
        if until_close or _wants_close(rheaders):
            return False, False
        return not close_after, False

    def _read_response_head(self, upstream: _Sock, forward_to: _Sock | None
                            ) -> tuple[int, bytes, list[tuple[str, str]]]:
        """The next response head; interim 1xx answers are forwarded when `forward_to` is set."""
        while True:
            rhead = upstream.read_until(b"\r\n\r\n")
            assert rhead is not None
            (_, status_text, *_), rheaders = _parse_head(rhead)
            status = int(status_text)
            if 100 <= status < 200 and status != 101 and forward_to is not None:
                with self._lock:
                    self._statuses[status] += 1
                forward_to.sendall(rhead)
                continue
            return status, rhead, rheaders

    def _relay_response(self, pair: _Pair, method: str, status: int, rhead: bytes,
                        rheaders: list[tuple[str, str]], plan: _Plan | None) -> bool:
        """Forward head and body; True if the body ran until the server closed."""
        assert pair.upstream is not None
        with self._lock:
            self._statuses[status] += 1
        pair.client.sendall(rhead)
        if method == "HEAD" or 100 <= status < 200 or status in _NO_BODY_STATUS:
            return False
        framing, length = _framing(rheaders)
        self._relay_body(pair.upstream, pair.client, framing, length, "down", plan,
                         pair.current)
        return framing == "none"

    # -- bodies ---------------------------------------------------------------------------------

    def _relay_body(self, src: _Sock, dst: _Sock | None, framing: str, length: int,
                    direction: str, plan: _Plan | None, ex: Exchange | None) -> None:
        pos = 0

        def send(data: bytes) -> None:
            if dst is not None:
                dst.sendall(data)
            self._count(direction, len(data))
            if ex is not None:
                if direction == "up":
                    ex.bytes_up += len(data)
                else:
                    ex.bytes_down += len(data)

        def emit(data: bytes) -> None:
            nonlocal pos
            if plan is not None and not plan.done and pos <= plan.at < pos + len(data):
                cut = plan.at - pos
                if cut:
                    send(data[:cut])
                plan.done = True
                pos += cut
                data = data[cut:]
                self._act(plan, src, dst, direction)
            if data:
                send(data)
                pos += len(data)

        if framing == "length":
            left = length
            while left:
                data = src.read_some(min(left, _BUF))
                left -= len(data)
                emit(data)
        elif framing == "chunked":
            while True:
                line = src.read_until(b"\r\n")
                assert line is not None
                if dst is not None:
                    dst.sendall(line)
                size = int(line.split(b";", 1)[0].strip(), 16)
                if size == 0:
                    while True:  # trailers, up to the empty line
                        trailer = src.read_until(b"\r\n")
                        assert trailer is not None
                        if dst is not None:
                            dst.sendall(trailer)
                        if trailer == b"\r\n":
                            return
                left = size
                while left:
                    data = src.read_some(min(left, _BUF))
                    left -= len(data)
                    emit(data)
                crlf = src.read_until(b"\r\n")
                if dst is not None and crlf is not None:
                    dst.sendall(crlf)
        else:  # delimited by close (responses only)
            for data in src.read_to_eof():
                emit(data)

    def _act(self, plan: _Plan, src: _Sock, dst: _Sock | None, direction: str) -> None:
        if plan.rule.kind == "stall":
            self._stopping.wait(plan.rule.seconds)
            return
        # drop: the server loses the rest of the upload (the client, still sending, gets a
        # reset) / the client the rest of the download (a clean close: a short body).
        raise _Abort(f"fault: drop {direction} at byte {plan.at}", hard=direction == "up")

    def _vanish(self, pair: _Pair, head: bytes, expect: bool) -> None:
        if pair.upstream is None:
            pair.upstream = self._connect_upstream()
        upstream, pair.upstream = pair.upstream, None
        try:
            upstream.sendall(head)
            if expect:
                self._read_response_head(upstream, forward_to=None)  # the server's 100 Continue
        finally:
            self._unregister(upstream.sock)
            upstream.sock.close()  # FIN: to the server, the client is gone
            if pair.current is not None:
                pair.current.outcome = "vanished"
        client = pair.client.sock
        client.settimeout(0.2)
        while not self._stopping.is_set():  # hang: swallow whatever comes, answer nothing
            try:
                if not client.recv(_BUF):
                    return
            except socket.timeout:
                continue
            except OSError:
                return

    def _answer_slowdown(self, pair: _Pair, method: str, target: str, framing: str,
                         length: int, expect: bool, close_after: bool) -> bool:
        """503 SlowDown.  With Expect: 100-continue the body is never requested, so the
        connection is closed after the answer; otherwise the body is read first (and counted:
        the client did send it) and the connection stays usable."""
        client = pair.client
        if not expect and (framing != "none" or length):
            self._relay_body(client, None, framing, length, "up", None, pair.current)
        with self._lock:
            self._request_ids += 1
            rid = f"FAULTPROXY{self._request_ids:08d}"
            self._statuses[503] += 1
        body = SLOWDOWN_BODY.format(resource=target.split("?", 1)[0].replace("&", "&amp;"),
                                    request_id=rid).encode()
        close = expect or close_after
        head = ("HTTP/1.1 503 Slow Down\r\n"
                "Content-Type: application/xml\r\n"
                f"Content-Length: {len(body)}\r\n"
                f"x-amz-request-id: {rid}\r\n"
                f"Date: {time.strftime('%a, %d %b %Y %H:%M:%S GMT', time.gmtime())}\r\n"
                + ("Connection: close\r\n" if close else "") + "\r\n").encode()
        client.sendall(head + (b"" if method == "HEAD" else body))
        if close:
            # Let the client read the answer before we go: wait for its close (briefly).
            client.sock.shutdown(socket.SHUT_WR)
            client.sock.settimeout(5)
            try:
                while client.sock.recv(_BUF):
                    pass
            except OSError:
                pass
            return False
        return True
