"""Generated bad requests for the console API (Hypothesis strategies) and the check every answer must pass.

Shared by the unit fuzz (console app over test stores) and the real-server fuzz (`hotline run`): a request is a
plain FuzzRequest, sent by `send` through any aiohttp ClientSession with a per-request time limit."""
from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from aiohttp import ClientSession
from hypothesis import strategies as st
from yarl import URL

REQUEST_TIMEOUT = 10.0  # seconds; an answer slower than this counts as a hang
MAX_ERROR_CHARS = 1000  # a one-line error is a sentence, not a dump of the input

# Every (method, route) of the console app this fuzz sends bad input to; the unit module checks it is the
# whole route table, so a new route is fuzzed from the day it is added.
FUZZED_ROUTES: frozenset[tuple[str, str]] = frozenset({
    ("GET", "/healthz"), ("GET", "/admin/health"), ("GET", "/login"), ("POST", "/login"), ("POST", "/logout"),
    ("GET", "/"), ("GET", "/api/me"), ("POST", "/api/me/password"), ("GET", "/api/calls/live"),
    ("GET", "/api/cases"), ("GET", "/api/cases/{case_number}"), ("POST", "/api/cases/{case_number}/notes"),
    ("GET", "/api/cases/{case_number}/transcripts"), ("GET", "/api/call-records"), ("GET", "/api/accounts"),
    ("POST", "/api/accounts"), ("POST", "/api/accounts/{name}/password"), ("GET", "/flows"), ("GET", "/api/flows"),
    ("GET", "/api/flows/audit"), ("GET", "/api/flows/routes"), ("POST", "/api/flows/routes"),
    ("POST", "/api/flows/validate"), ("POST", "/api/flows/publish"), ("GET", "/api/flows/{name}"),
    ("GET", "/api/flows/{name}/versions"), ("POST", "/api/flows/{name}/rollback"), ("GET", "/agents"),
    ("GET", "/api/agents"), ("POST", "/api/agents/{name}/{action}"), ("GET", "/api/queues"),
    ("GET", "/api/queues/metrics"), ("GET", "/metrics"),
})


@dataclass(frozen=True)
class FuzzRequest:
    """One generated request: method, already-encoded path and query, body bytes and content type.

    may_succeed: the input can be valid by chance (an unknown query parameter, a well-formed new account),
    so a 2xx/3xx is fine; otherwise the request is bad by construction and must get a 4xx."""

    method: str
    path: str
    body: bytes | None = None
    content_type: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    may_succeed: bool = False

    def __repr__(self) -> str:  # Hypothesis prints this for a failing example: keep it short enough to read
        body = self.body if self.body is None or len(self.body) <= 300 else self.body[:300] + b"..."
        return (f"FuzzRequest({self.method} {self.path[:300]!r}, content_type={self.content_type!r}, "
                f"body={body!r}, may_succeed={self.may_succeed})")


@dataclass(frozen=True)
class Answer:
    """What came back: status, content type and body."""

    status: int
    content_type: str
    body: bytes


async def send(http: ClientSession, base_url: str, request: FuzzRequest, csrf: str | None) -> Answer:
    """Send one request (CSRF header added when given), bounded by REQUEST_TIMEOUT; TimeoutError is a hang."""
    headers = dict(request.headers)
    if csrf is not None and "X-CSRF-Token" not in headers:
        headers["X-CSRF-Token"] = csrf
    if request.content_type is not None:
        headers["Content-Type"] = request.content_type
    url = URL(base_url + request.path, encoded=True)
    async with asyncio.timeout(REQUEST_TIMEOUT):
        async with http.request(request.method, url, data=request.body, headers=headers,
                                allow_redirects=False) as resp:
            return Answer(resp.status, resp.headers.get("Content-Type", ""), await resp.read())


def check_answer(request: FuzzRequest | RawRequest, answer: Answer) -> None:
    """Never a 5xx or a traceback; a refusal is a 4xx with a one-line error ({"error"} for JSON answers)."""
    text = answer.body.decode("utf-8", "replace")
    assert answer.status < 500, f"{answer.status} for {request!r}: {text[:500]}"
    assert "Traceback" not in text, f"traceback in the answer to {request!r}: {text[:500]}"
    if answer.status < 400:
        assert request.may_succeed, f"bad input accepted ({answer.status}) for {request!r}: {text[:300]}"
        return
    if isinstance(request, RawRequest) and request.not_http:
        # aiohttp's HTTP parser refuses the bytes (a NUL in a header) before any console code runs; its fixed
        # text points at the bad character on further lines. A 400 and no traceback is what can be asked of it.
        assert answer.status == 400, f"{answer.status} for {request!r}: {text[:300]}"
        return
    if answer.content_type.startswith("application/json"):
        payload = json.loads(answer.body)
        assert isinstance(payload, dict) and isinstance(payload.get("error"), str), \
            f"{answer.status} without an 'error' string for {request!r}: {text[:300]}"
        error = payload["error"]
    elif answer.content_type.startswith("text/html"):
        return  # the login form re-rendered with its error line (401/429): a page, not an API answer
    else:
        error = text.rstrip("\n")
    assert error.strip(), f"{answer.status} with an empty error for {request!r}"
    assert "\n" not in error and "\r" not in error, f"multi-line error for {request!r}: {error[:300]!r}"
    assert len(error) <= MAX_ERROR_CHARS, f"{len(error)}-character error for {request!r}: {error[:200]!r}..."


# --- building blocks -------------------------------------------------------------------------------------


def path_segment(value: str) -> str:
    """value percent-encoded as one path segment (lone surrogates as their raw bytes: invalid UTF-8)."""
    return quote(value.encode("utf-8", "surrogatepass"), safe="")


def query_value(value: str) -> str:
    """value percent-encoded for a query string."""
    return quote(value.encode("utf-8", "surrogatepass"), safe="")


# Text a user would never type: control characters, lone surrogates, right-to-left marks, NUL, emoji, CJK.
nasty_text = st.text(st.characters(codec=None, categories=None), max_size=40) | st.sampled_from([
    "", " ", "\x00", "\r\n", "\t", "\u202e", "\ufeff", "\ud800", "\udfff", "../../etc/passwd", "%00", "%2e%2e",
    "'; DROP TABLE cases; --", "${jndi:x}", "{{7*7}}", "<script>", "\\", "..", "NaN", "-1", "0", "1e999",
    "9" * 30, "9" * 5000, "도로 민원", "😀" * 20, "a" * 2000,
])

huge_text = st.sampled_from([10_000, 30_000, 60_000]).map(lambda n: "x" * n) | st.integers(1000, 20_000).map(
    lambda n: "\u00e9\x01" * n)

# A number the handlers must not trust: out of range, not finite, bigger than any column.
bad_numbers = st.sampled_from([
    "NaN", "Infinity", "-Infinity", "1e999", "-1e999", "-1", "0", "-0", "1.5", "1e2", "9" * 25, "-" + "9" * 25,
    "9" * 5000, "18446744073709551616", "9223372036854775808", "-9223372036854775809", "0x10", "1_000", "true",
])


def _scalar_json(draw: Any) -> str:
    return draw(st.one_of(
        st.just("null"), st.sampled_from(["true", "false"]), bad_numbers,
        st.integers().map(str), st.floats(allow_nan=False, allow_infinity=False).map(repr),
        nasty_text.map(lambda s: json.dumps(s)), huge_text.map(lambda s: json.dumps(s))))


@st.composite
def json_value(draw: Any, depth: int = 3) -> str:
    """JSON text of any type (NaN, 1e999, huge ints and lone-surrogate escapes included)."""
    if depth <= 0 or draw(st.booleans()):
        return _scalar_json(draw)
    if draw(st.booleans()):
        items = draw(st.lists(json_value(depth - 1), max_size=4))
        return "[" + ",".join(items) + "]"
    keys = draw(st.lists(nasty_text, max_size=4))
    return "{" + ",".join(f"{json.dumps(k)}:{draw(json_value(depth - 1))}" for k in keys) + "}"


@st.composite
def deep_json(draw: Any) -> str:
    """Arrays or objects nested far deeper than any form (the body stays under the size limit)."""
    depth = draw(st.sampled_from([200, 1000, 5000, 20_000]))
    if draw(st.booleans()):
        return "[" * depth + "]" * depth
    return '{"a":' * depth + "1" + "}" * depth


@st.composite
def json_object_for(draw: Any, fields: tuple[str, ...]) -> str:
    """A JSON object with some of these fields (any types) and perhaps extra ones."""
    names = draw(st.lists(st.sampled_from(fields), unique=True, max_size=len(fields)))
    names += draw(st.lists(nasty_text, max_size=2))
    return "{" + ",".join(f"{json.dumps(n)}:{draw(json_value(2))}" for n in names) + "}"


@st.composite
def body_for(draw: Any, fields: tuple[str, ...]) -> tuple[bytes, str | None]:
    """(body, content type): a wrong-typed JSON object, any JSON, deep JSON, garbage, a form, a wrong type."""
    kind = draw(st.sampled_from(["object", "object", "object", "any", "deep", "garbage", "form", "wrong_type",
                                 "charset", "multipart", "empty"]))
    if kind == "object":
        return draw(json_object_for(fields)).encode("utf-8", "surrogatepass"), "application/json"
    if kind == "any":
        return draw(json_value()).encode("utf-8", "surrogatepass"), "application/json"
    if kind == "deep":
        return draw(deep_json()).encode(), "application/json"
    if kind == "garbage":
        return draw(st.binary(max_size=200)), draw(st.sampled_from(["application/json", None]))
    if kind == "form":
        pairs = [(draw(st.sampled_from(fields)), draw(nasty_text)) for _ in range(draw(st.integers(0, 3)))]
        return ("&".join(f"{query_value(k)}={query_value(v)}" for k, v in pairs)).encode(), \
            "application/x-www-form-urlencoded"
    if kind == "wrong_type":
        return draw(json_object_for(fields)).encode("utf-8", "surrogatepass"), draw(st.sampled_from([
            "text/plain", "application/xml", "application/octet-stream", "image/png", "application/json-patch+json",
            "*/*", "", "application/json; charset=utf-16", "text/html; charset=utf-8"]))
    if kind == "charset":
        return draw(json_object_for(fields)).encode("utf-8", "surrogatepass"), draw(st.sampled_from([
            "application/json; charset=nope", "application/json; charset=utf-7", "application/json; charset=",
            "application/x-www-form-urlencoded; charset=nope", "application/json; charset=\"\\\"",
            "application/json; charset=latin-1; charset=utf-32", "multipart/form-data; charset=x"]))
    if kind == "multipart":
        boundary = draw(st.sampled_from(["", "x", "-" * 80, "\u00e9", "a b"]))
        return draw(st.binary(max_size=200)) + b"--x--\r\n", f"multipart/form-data; boundary={boundary}"
    return b"", draw(st.sampled_from(["application/json", "application/x-www-form-urlencoded", None]))


oversized_body = st.sampled_from([70_000, 200_000, 2_000_000]).map(lambda n: (b'{"note": "' + b"x" * n + b'"}'))

# Names of things in paths: case numbers, accounts, agents, flows; all of them malformed or unknown.
bad_names = nasty_text | st.sampled_from(["2611290001" + "9" * 60, "a" * 300, "A-1", "admin1x", "null", "."])
bad_versions = bad_numbers | nasty_text


# --- requests per route family ---------------------------------------------------------------------------

_CASE_PATHS = ("/api/cases/{}", "/api/cases/{}/transcripts")
_FLOW_GET_PATHS = ("/api/flows/{}", "/api/flows/{}/versions")


@st.composite
def bad_path_requests(draw: Any) -> FuzzRequest:
    """GETs of case numbers, flow names, flow versions that are malformed or unknown."""
    kind = draw(st.sampled_from(["case", "flow", "flow_version"]))
    if kind == "case":
        template = draw(st.sampled_from(_CASE_PATHS))
        return FuzzRequest("GET", template.format(path_segment(draw(bad_names))))
    if kind == "flow":
        template = draw(st.sampled_from(_FLOW_GET_PATHS))
        return FuzzRequest("GET", template.format(path_segment(draw(bad_names))))
    name = draw(st.sampled_from(["default", "nope"]) | bad_names)
    return FuzzRequest("GET", f"/api/flows/{path_segment(name)}?version={query_value(draw(bad_versions))}")


_QUERY_ROUTES: tuple[tuple[str, str], ...] = (
    ("/api/cases", "limit"), ("/api/cases", "status"), ("/api/call-records", "limit"),
    ("/api/queues/metrics", "since"), ("/api/flows/default", "version"),
)
_PLAIN_GETS = ("/healthz", "/admin/health", "/login", "/", "/api/me", "/api/calls/live", "/api/accounts", "/flows",
               "/api/flows", "/api/flows/audit", "/api/flows/routes", "/agents", "/api/agents", "/api/queues",
               "/metrics")
bad_times = st.sampled_from([
    "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "0001-01-01", "2026-02-30T00:00:00+00:00",
    "2026-11-29T09:30:00+25:00", "2026-11-29T09:30:00", "yesterday", "2026-11-29T09:30:00+00:00\x00",
    "9" * 40, "2026-W48-1T00:00+00:00", "+002026-11-29",
]) | nasty_text


@st.composite
def bad_query_requests(draw: Any) -> FuzzRequest:
    """GETs with bad values of the parameters routes read, or unknown/repeated/oversized parameters."""
    if draw(st.integers(0, 3)) == 0:
        path = draw(st.sampled_from(_PLAIN_GETS + tuple(p for p, _ in _QUERY_ROUTES)))
        pairs = draw(st.lists(st.tuples(nasty_text, nasty_text), min_size=1, max_size=4))
        query = "&".join(f"{query_value(k)}={query_value(v)}" for k, v in pairs)
        raw = draw(st.sampled_from(["", "&&&", "=", "%", "%zz", "a=%ff%fe", "next=//evil.example"]))
        return FuzzRequest("GET", f"{path}?{query}&{raw}", may_succeed=True)
    path, param = draw(st.sampled_from(_QUERY_ROUTES))
    if param == "limit":
        # (empty: the default limit)
        value = draw((bad_numbers | nasty_text).filter(lambda s: s != "" and not _valid_limit(s)))
    elif param == "since":
        value = draw(bad_times.filter(lambda s: s != ""))  # (empty: since today)
    elif param == "version":
        value = draw(bad_versions)
    else:
        value = draw(nasty_text.filter(lambda s: s not in ("", "new", "in_progress", "open", "closed")))
    # Statuses and versions are lookups: an unknown one that is well-formed finds nothing (200 with no rows).
    return FuzzRequest("GET", f"{path}?{param}={query_value(value)}", may_succeed=param in ("status",))


# (method, path template, fields the handler reads, may a chance-valid body succeed)
_BODY_ROUTES: tuple[tuple[str, str, tuple[str, ...], bool], ...] = (
    ("POST", "/login", ("username", "password", "next", "csrf_token"), False),
    ("POST", "/api/me/password", ("current_password", "new_password"), False),
    ("POST", "/api/cases/{case}/notes", ("note", "notes"), False),
    ("POST", "/api/accounts", ("username", "password", "role", "display_name", "sip_endpoint"), True),
    ("POST", "/api/accounts/{name}/password", ("password",), False),
    ("POST", "/api/flows/routes", ("number", "flow"), False),
    ("POST", "/api/flows/validate", ("yaml",), True),  # a string is validated: 200 with the report of errors
    ("POST", "/api/flows/publish", ("yaml", "comment"), False),
    ("POST", "/api/flows/{flow}/rollback", ("version",), False),
    ("POST", "/api/agents/{name}/{action}", ("reason",), False),
)


@st.composite
def bad_body_requests(draw: Any) -> FuzzRequest:
    """POSTs of wrong-typed, deep, huge, garbage or wrongly typed bodies, at good and bad path parameters."""
    method, template, fields, may_succeed = draw(st.sampled_from(_BODY_ROUTES))
    path = template.format(
        case=path_segment(draw(st.sampled_from(["2611290001"]) | bad_names)),
        # agents exist (agent1) or not; never the logged-in admin's own account (a reset would end the session)
        name=path_segment(draw(st.sampled_from(["agent1", "nobody"])
                               | bad_names.filter(lambda s: s.strip().lower() not in ("admin", "admin1")))),
        flow=path_segment(draw(st.sampled_from(["default"]) | bad_names)),
        action=path_segment(draw(st.sampled_from(["pause", "pause", "login", "resume"]) | bad_names)),
    )
    if draw(st.integers(0, 9)) == 0:
        return FuzzRequest(method, path, draw(oversized_body), "application/json")
    body, content_type = draw(body_for(fields))
    # Agent login/resume read no body: acting on an existing agent with any body is fine.
    acts = path.startswith("/api/agents/agent1/") and not path.endswith("/pause")
    headers = {}
    if content_type and "form" in content_type and draw(st.booleans()):
        headers["X-CSRF-Token"] = ""  # no header token: the access check reads the form's csrf_token field
    return FuzzRequest(method, path, body, content_type, headers, may_succeed=(may_succeed or acts) and not headers)


@st.composite
def bad_flow_yaml_requests(draw: Any) -> FuzzRequest:
    """Validate/publish bodies whose 'yaml' is a string of malformed flow YAML (see flow_yaml_texts)."""
    from tests.support.flow_fuzz import flow_yaml_texts

    path = draw(st.sampled_from(["/api/flows/validate", "/api/flows/publish"]))
    text = draw(flow_yaml_texts())
    body = json.dumps({"yaml": text}).encode()
    # validate answers 200 with the report of a bad flow; publish must refuse it (422) or take a valid one.
    return FuzzRequest("POST", path, body, "application/json", may_succeed=True)


def _valid_limit(text: str) -> bool:
    try:
        return 1 <= int(text) <= 500
    except ValueError:
        return False


@st.composite
def odd_method_requests(draw: Any) -> FuzzRequest:
    """Methods a route does not take, and paths or headers beyond the server's limits."""
    method, template = draw(st.sampled_from(sorted(FUZZED_ROUTES)))
    path = template.format(case_number="2611290001", name="default", action="login")
    kind = draw(st.sampled_from(["method", "method", "long_path", "long_header", "many_params"]))
    if kind == "method":
        other = draw(st.sampled_from(["PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "PROPFIND", "POST", "GET"]))
        # GET routes answer HEAD; another route may take the other method (GET /api/accounts vs POST)
        return FuzzRequest(other, path, b"{}", "application/json", may_succeed=other in ("GET", "POST"))
    if kind == "long_path":
        return FuzzRequest(method, path + "/" + "a" * draw(st.sampled_from([5000, 9000, 20_000])))
    if kind == "long_header":
        size = draw(st.sampled_from([5000, 9000, 20_000]))
        return FuzzRequest(method, path, headers={"X-Fuzz": "a" * size}, may_succeed=size < 8190 and method == "GET")
    query = "&".join(f"limit={i}" for i in range(draw(st.sampled_from([100, 1000]))))
    return FuzzRequest(method, f"{path}?{query}", may_succeed=method == "GET")


@dataclass(frozen=True)
class RawRequest:
    """A request written byte for byte to the socket: header values no HTTP client would send (not UTF-8)."""

    method: str
    path: str
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes = b""
    may_succeed: bool = True  # a stray header leaves a good request good (GET /api/me with an odd Accept)

    @property
    def not_http(self) -> bool:
        """A header value with control characters other than tab: not HTTP at all (RFC 9110 field-value)."""
        return any(b < 0x20 and b != 0x09 or b == 0x7F for _, value in self.headers for b in value)

    def wire(self, csrf: str | None, cookie: str | None) -> bytes:
        """The request as bytes; the session's cookie and CSRF token unless a generated header replaces them."""
        names = {name.lower() for name, _ in self.headers}
        lines = [f"{self.method} {self.path} HTTP/1.1".encode(), b"Host: 127.0.0.1", b"Connection: close"]
        if cookie is not None and b"cookie" not in names:
            lines.append(b"Cookie: " + cookie.encode())
        if csrf is not None and b"x-csrf-token" not in names:
            lines.append(b"X-CSRF-Token: " + csrf.encode())
        lines += [name + b": " + value for name, value in self.headers]
        lines.append(b"Content-Length: " + str(len(self.body)).encode())
        return b"\r\n".join(lines) + b"\r\n\r\n" + self.body


async def send_raw(host: str, port: int, request: RawRequest, csrf: str | None, cookie: str | None) -> Answer:
    """Write one raw request and read the whole answer, bounded by REQUEST_TIMEOUT."""
    async with asyncio.timeout(REQUEST_TIMEOUT):
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(request.wire(csrf, cookie))
            await writer.drain()
            data = await reader.read()
        finally:
            writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.split(b"\r\n")
    headers = dict(line.decode("latin-1").split(":", 1) for line in header_lines if b":" in line)
    content_type = next((v.strip() for k, v in headers.items() if k.lower() == "content-type"), "")
    if any(k.lower() == "transfer-encoding" and "chunked" in v for k, v in headers.items()):
        body = _unchunk(body)
    return Answer(int(status_line.split()[1]), content_type, body)


def _unchunk(body: bytes) -> bytes:
    out = b""
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out += rest[:size]
        body = rest[size + 2:]
    return out


header_bytes = st.binary(max_size=60).filter(lambda b: b"\r" not in b and b"\n" not in b) | st.sampled_from([
    b"\xff\xfe", b"HOTLINE_CONSOLE=\xff\xfe", b"HOTLINE_CONSOLE=" + b"a" * 100 + b"\xc3", b"HOTLINE_CONSOLE=",
    b"HOTLINE_CONSOLE=" + b"a" * 5000, b'HOTLINE_CONSOLE="\\x"', b"HOTLINE_CONSOLE=%ff; HOTLINE_CONSOLE=x",
    b"application/json; charset=\xff", b"Bearer \xff", b"\x00", b"\t",
])


@st.composite
def raw_header_requests(draw: Any) -> RawRequest:
    """Any route with a Cookie, CSRF, Content-Type, Accept or Authorization header of arbitrary bytes."""
    # Not logout: with the session's own cookie and token that is a good request, and it ends the session.
    method, template = draw(st.sampled_from(sorted(FUZZED_ROUTES - {("POST", "/logout")})))
    path = template.format(case_number="2611290001", name="agent1", action="login")
    name = draw(st.sampled_from([b"Cookie", b"X-CSRF-Token", b"Content-Type", b"Accept", b"Authorization",
                                 b"X-Forwarded-For", b"Origin"]))
    body = b'{"note": "x"}' if method == "POST" else b""
    return RawRequest(method, path, ((name, draw(header_bytes)),), body)
