#!/usr/bin/env python3
"""Run moto's server in-process, patched to behave like AWS where tgb-agent depends on it.

    python tests/aws/moto_launcher.py --host 127.0.0.1 --port 0 --ready-file PATH [--healthy-after 2]

Writes ``http://127.0.0.1:<port>`` to the ready file (temp + rename) once the server answers, and
exits cleanly on SIGTERM/SIGINT. The ELBv2 behaviour patches live in ``moto_patches.py`` (the
only code that touches moto internals). This file adds, as WSGI middleware in front of moto:
throttling injection, per-operation call counters, a log of target writes, and the JSON control
API under ``/_launcher/``. See tests/aws/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import sys
import threading
import time
import urllib.parse
import urllib.request
import uuid
from collections import deque
from io import BytesIO
from typing import Any, Callable, Iterable

# Before moto is imported: skip the ~1,300 default AMIs/snapshots; RunInstances still accepts any
# ImageId (measured; see README). Callers may override it.
os.environ.setdefault("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import moto_patches  # noqa: E402

CONTROL_PREFIX = "/_launcher/"

# Query-API "Version" values, used when the SigV4 credential scope does not settle the service.
SERVICE_BY_VERSION = {"2015-12-01": "elbv2", "2012-06-01": "elb", "2016-11-15": "ec2", "2011-06-15": "sts"}
SCOPE = re.compile(r"Credential=[^/]+/\d{8}/[^/]+/([^/]+)/aws4_request")
ERROR_CODE = re.compile(rb"<Code>([^<]+)</Code>")


class Throttles:
    """Pending injected failures: operation name (optionally per service) -> remaining count."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[tuple[str | None, str], int] = {}

    def set(self, operation: str, count: int, service: str | None) -> None:
        with self._lock:
            if count > 0:
                self._pending[(service, operation)] = count
            else:
                self._pending.pop((service, operation), None)

    def take(self, service: str, operation: str) -> bool:
        with self._lock:
            for key in ((service, operation), (None, operation)):
                left = self._pending.get(key, 0)
                if left > 0:
                    if left == 1:
                        del self._pending[key]
                    else:
                        self._pending[key] = left - 1
                    return True
            return False

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return [{"service": s, "operation": o, "count": c} for (s, o), c in sorted(
                self._pending.items(), key=lambda kv: (kv[0][0] or "", kv[0][1]))]

    def clear(self) -> None:
        with self._lock:
            self._pending.clear()


class Faults:
    """Random failures of a share of the calls, like a bad day in a real region: throttling, a
    server error before the call took effect, a server error *after* it took effect (the answer is
    lost), or a slow answer. Seeded, so a run can be replayed."""

    KINDS = ("throttle", "error-before", "error-after", "slow")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.configure({})

    def configure(self, p: dict[str, Any]) -> dict[str, Any]:
        rate = float(p.get("rate", 0.0))
        if not 0.0 <= rate <= 1.0:
            raise ValueError("rate must be between 0 and 1")
        kinds = list(p.get("kinds", self.KINDS))
        unknown = [k for k in kinds if k not in self.KINDS]
        if unknown or not kinds:
            raise ValueError(f"kinds must be a non-empty subset of {list(self.KINDS)}, not {unknown or kinds}")
        operations = p.get("operations")
        if operations is not None and not all(isinstance(o, str) for o in operations):
            raise ValueError("operations must be a list of Query API action names")
        with self._lock:
            self.rate = rate
            self.kinds = kinds
            self.operations = set(operations) if operations is not None else None
            self.services = set(p.get("services", ["elbv2"]))
            self.slow_seconds = float(p.get("slowSeconds", 0.5))
            self._random = random.Random(p.get("seed", 0))
            self.injected: dict[str, int] = {}
            return self.snapshot_locked()

    def draw(self, service: str, action: str) -> str | None:
        with self._lock:
            if self.rate <= 0 or service not in self.services:
                return None
            if self.operations is not None and action not in self.operations:
                return None
            if self._random.random() >= self.rate:
                return None
            kind = self._random.choice(self.kinds)
            self.injected[kind] = self.injected.get(kind, 0) + 1
            return kind

    def snapshot_locked(self) -> dict[str, Any]:
        return {"rate": self.rate, "kinds": self.kinds, "services": sorted(self.services),
                "operations": sorted(self.operations) if self.operations is not None else None,
                "slowSeconds": self.slow_seconds, "injected": dict(self.injected)}

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return self.snapshot_locked()


class Counters:
    """Calls per service and Query action: total, succeeded, failed, throttled, and error codes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: dict[str, dict[str, dict[str, Any]]] = {}

    def record(self, service: str, action: str, status: int, error_code: str | None, throttled: bool) -> None:
        with self._lock:
            entry = self._calls.setdefault(service, {}).setdefault(
                action, {"total": 0, "succeeded": 0, "failed": 0, "throttled": 0, "errors": {}})
            entry["total"] += 1
            if status < 400:
                entry["succeeded"] += 1
            else:
                entry["failed"] += 1
                code = error_code or f"HTTP{status}"
                entry["errors"][code] = entry["errors"].get(code, 0) + 1
            if throttled:
                entry["throttled"] += 1

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return json.loads(json.dumps(self._calls))

    def clear(self) -> None:
        with self._lock:
            self._calls.clear()


class TargetWrites:
    """The last MAX_ENTRIES elbv2 RegisterTargets/DeregisterTargets calls, in arrival order, with
    their targets and answer status: lets a benchmark time when each target's write was sent."""

    ACTIONS = ("RegisterTargets", "DeregisterTargets")
    MAX_ENTRIES = 50_000

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: deque[dict[str, Any]] = deque(maxlen=self.MAX_ENTRIES)

    def record(self, arrived: float, action: str, body: bytes, status: int) -> None:
        params = urllib.parse.parse_qs(body.decode("utf-8", "replace"))
        targets = []
        n = 1
        while (ident := params.get(f"Targets.member.{n}.Id")) is not None:
            port = params.get(f"Targets.member.{n}.Port")
            targets.append({"id": ident[0], "port": int(port[0]) if port and port[0].isdigit() else None})
            n += 1
        entry = {"time": arrived, "action": action, "status": status, "targets": targets,
                 "targetGroupArn": (params.get("TargetGroupArn") or [None])[0]}
        with self._lock:
            self._entries.append(entry)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"targetWrites": list(self._entries)}

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


def _noting_status(start_response: Callable[..., Any], into: dict[str, int]) -> Callable[..., Any]:
    """A WSGI start_response that also notes the HTTP status code in ``into["status"]``."""

    def noting(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        into["status"] = int(status.split()[0])
        return start_response(status, headers, exc_info) if exc_info else start_response(status, headers)

    return noting


def _read_body(environ: dict[str, Any]) -> bytes:
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    stream = environ["wsgi.input"]
    if length > 0:
        body = stream.read(length)
    elif environ.get("wsgi.input_terminated") or "chunked" in environ.get("HTTP_TRANSFER_ENCODING", ""):
        body = stream.read()
    else:
        body = b""
    environ["wsgi.input"] = BytesIO(body)
    environ["CONTENT_LENGTH"] = str(len(body))
    return body


def _identify(environ: dict[str, Any], body: bytes) -> tuple[str, str] | None:
    """(service, action) of a Query-protocol request, or None when it is not one."""
    params: dict[str, list[str]] = {}
    if environ.get("CONTENT_TYPE", "").startswith("application/x-www-form-urlencoded") and body:
        params = urllib.parse.parse_qs(body.decode("utf-8", "replace"))
    query = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""))
    action = (params.get("Action") or query.get("Action") or [None])[0]
    if not action:
        return None
    version = (params.get("Version") or query.get("Version") or [None])[0]
    service = SERVICE_BY_VERSION.get(version or "")
    if service is None:
        m = SCOPE.search(environ.get("HTTP_AUTHORIZATION", ""))
        service = m.group(1) if m else "unknown"
        if service == "elasticloadbalancing":
            service = "elbv2"
    return service, action


def _error_response(service: str, status: str, ec2_code: str, ec2_message: str, code: str, message: str,
                    fault_type: str) -> tuple[str, list[tuple[str, str]], bytes]:
    """An AWS Query error document: EC2's shape for ec2, the ErrorResponse shape otherwise."""
    request_id = str(uuid.uuid4())
    if service == "ec2":
        body = ("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error>"
                f"<Code>{ec2_code}</Code><Message>{ec2_message}</Message>"
                f"</Error></Errors><RequestID>{request_id}</RequestID></Response>")
    else:
        ns = "http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/" if service == "elbv2" else ""
        xmlns = f' xmlns="{ns}"' if ns else ""
        body = (f"<ErrorResponse{xmlns}><Error><Type>{fault_type}</Type><Code>{code}</Code>"
                f"<Message>{message}</Message></Error><RequestId>{request_id}</RequestId></ErrorResponse>")
    data = body.encode()
    headers = [("Content-Type", "text/xml"), ("Content-Length", str(len(data))),
               ("x-amzn-RequestId", request_id)]
    return status, headers, data


def _throttle_response(service: str) -> tuple[str, list[tuple[str, str]], bytes]:
    status = "503 Service Unavailable" if service == "ec2" else "400 Bad Request"
    return _error_response(service, status, "RequestLimitExceeded", "Request limit exceeded.", "Throttling",
                           "Rate exceeded", "Sender")


def _server_error_response(service: str) -> tuple[str, list[tuple[str, str]], bytes]:
    return _error_response(service, "500 Internal Server Error", "InternalError", "An internal error has occurred.",
                           "InternalFailure", "Internal failure", "Receiver")


class Launcher:
    """WSGI middleware: control API, throttling injection and call counting in front of moto."""

    def __init__(self, moto_app: Callable[..., Iterable[bytes]], initial_config: dict[str, Any]) -> None:
        self.moto_app = moto_app
        self.throttles = Throttles()
        self.faults = Faults()
        self.counters = Counters()
        self.writes = TargetWrites()
        self.initial_config = initial_config
        self.started = time.time()

    # -- WSGI entry ----------------------------------------------------------------------------
    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path.startswith(CONTROL_PREFIX) or path == CONTROL_PREFIX.rstrip("/"):
            return self._control(environ, start_response, path)
        if path.startswith("/moto-api") or environ.get("REQUEST_METHOD") not in ("POST", "GET"):
            return self.moto_app(environ, start_response)
        body = _read_body(environ)
        ident = _identify(environ, body)
        if ident is None:
            return self.moto_app(environ, start_response)
        service, action = ident
        if service == "elbv2" and action in TargetWrites.ACTIONS:
            arrived = time.time()
            status_of: dict[str, int] = {}
            result = self._serve(environ, _noting_status(start_response, status_of), service, action)
            self.writes.record(arrived, action, body, status_of.get("status", 500))
            return result
        return self._serve(environ, start_response, service, action)

    def _serve(self, environ: dict[str, Any], start_response: Callable[..., Any], service: str,
               action: str) -> Iterable[bytes]:
        fault = self.faults.draw(service, action)
        if self.throttles.take(service, action) or fault == "throttle":
            status, headers, data = _throttle_response(service)
            code = "RequestLimitExceeded" if service == "ec2" else "Throttling"
            self.counters.record(service, action, int(status.split()[0]), code, True)
            start_response(status, headers)
            return [data]
        if fault == "slow":
            time.sleep(self.faults.slow_seconds)
        if fault in ("error-before", "error-after"):
            if fault == "error-after":
                # The call takes effect; only its answer is lost.
                result = self.moto_app(environ, lambda status, headers, exc_info=None: None)
                try:
                    for _ in result:
                        pass
                finally:
                    close = getattr(result, "close", None)
                    if close:
                        close()
            status, headers, data = _server_error_response(service)
            self.counters.record(service, action, 500, "InternalFailure", False)
            start_response(status, headers)
            return [data]

        captured: dict[str, int] = {}
        result = self.moto_app(environ, _noting_status(start_response, captured))
        status = captured.get("status", 500)
        if status < 400:
            self.counters.record(service, action, status, None, False)
            return result
        # Errors are small XML documents: buffer them to count by error code.
        try:
            data = b"".join(result)
        finally:
            close = getattr(result, "close", None)
            if close:
                close()
        m = ERROR_CODE.search(data)
        self.counters.record(service, action, status, m.group(1).decode() if m else None, False)
        return [data]

    # -- control API ---------------------------------------------------------------------------
    def _control(self, environ: dict[str, Any], start_response: Callable[..., Any], path: str) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        route = path[len(CONTROL_PREFIX):].strip("/")
        try:
            body = _read_body(environ)
            payload = json.loads(body) if body.strip() else {}
            if not isinstance(payload, dict):
                raise ValueError("body must be a JSON object")
            status, result = self._route(method, route, payload)
        except (ValueError, TypeError, KeyError) as exc:
            status, result = 400, {"error": f"{type(exc).__name__}: {exc}"}
        except LookupError as exc:
            status, result = 404, {"error": str(exc)}
        data = (json.dumps(result, indent=1, sort_keys=True) + "\n").encode()
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}.get(status, "OK")
        start_response(f"{status} {reason}", [("Content-Type", "application/json"),
                                              ("Content-Length", str(len(data)))])
        return [data]

    def _route(self, method: str, route: str, payload: dict[str, Any]) -> tuple[int, Any]:
        routes: dict[tuple[str, str], Callable[[dict[str, Any]], Any]] = {
            ("GET", "health"): lambda p: {"status": "ok", "moto": moto_patches.MOTO_VERSION,
                                          "uptimeSeconds": round(time.time() - self.started, 3)},
            ("GET", "calls"): lambda p: self.counters.snapshot(),
            ("POST", "calls/reset"): lambda p: (self.counters.clear(), self.writes.clear(), {"status": "ok"})[2],
            ("GET", "calls/log"): lambda p: self.writes.snapshot(),
            ("GET", "throttle"): lambda p: {"pending": self.throttles.snapshot()},
            ("POST", "throttle"): self._set_throttle,
            ("POST", "throttle/reset"): lambda p: (self.throttles.clear(), {"status": "ok"})[1],
            ("GET", "faults"): lambda p: self.faults.snapshot(),
            ("POST", "faults"): self.faults.configure,
            ("POST", "target-health"): self._set_health,
            ("GET", "config"): lambda p: moto_patches.CONFIG.to_json(),
            ("POST", "config"): self._set_config,
            ("POST", "reset"): self._reset,
        }
        handler = routes.get((method, route))
        if handler is None:
            if any(r == route for _, r in routes):
                return 405, {"error": f"{method} not allowed on {CONTROL_PREFIX}{route}"}
            return 404, {"error": f"no such control endpoint: {CONTROL_PREFIX}{route}",
                         "endpoints": sorted(f"{m} {CONTROL_PREFIX}{r}" for m, r in routes)}
        return 200, handler(payload)

    def _set_throttle(self, p: dict[str, Any]) -> Any:
        operation = p["operation"]
        if not isinstance(operation, str) or not operation:
            raise ValueError("operation must be a Query API action name, e.g. RegisterTargets")
        count = int(p.get("count", 1))
        service = p.get("service")
        if service is not None and service not in ("elbv2", "ec2", "elb", "sts") and not isinstance(service, str):
            raise ValueError("service must be a string such as 'elbv2' or 'ec2'")
        self.throttles.set(operation, count, service)
        return {"pending": self.throttles.snapshot()}

    def _set_health(self, p: dict[str, Any]) -> Any:
        return moto_patches.set_target_health(
            p["targetGroupArn"], str(p["id"]), p.get("port"), p.get("state"), p.get("reason"),
            p.get("description"))

    def _set_config(self, p: dict[str, Any]) -> Any:
        with moto_patches.LOCK:
            moto_patches.CONFIG.update(p)
            return moto_patches.CONFIG.to_json()

    def _reset(self, p: dict[str, Any]) -> Any:
        """Counters, throttles and config back to their start values (AWS state: /moto-api/reset)."""
        self.counters.clear()
        self.writes.clear()
        self.throttles.clear()
        self.faults.configure({})
        with moto_patches.LOCK:
            moto_patches.CONFIG.__dict__.update(moto_patches.Config().__dict__)
            moto_patches.CONFIG.update(self.initial_config)
        return {"status": "ok", "config": moto_patches.CONFIG.to_json()}


def _write_ready(path: str, url: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        f.write(url + "\n")
    os.replace(tmp, path)


def _warm_up(moto_app: Any) -> None:
    """Serve one EC2 and one ELBv2 read in-process (not counted), so that the ~2 s of imports and
    service-model loading happen before ready, not on the first API call."""
    from werkzeug.test import Client

    client = Client(moto_app)
    for scope, body in (("ec2", "Action=DescribeVpcs&Version=2016-11-15"),
                        ("elasticloadbalancing", "Action=DescribeTargetGroups&Version=2015-12-01"),
                        ("sts", "Action=GetCallerIdentity&Version=2011-06-15")):
        auth = (f"AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/{scope}/aws4_request, "
                "SignedHeaders=host, Signature=0")
        client.post("/", data=body, content_type="application/x-www-form-urlencoded",
                    headers={"Authorization": auth})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port to bind; 0 picks a free one")
    parser.add_argument("--ready-file", help="file to write the endpoint URL to once the server answers")
    parser.add_argument("--healthy-after", type=float, default=2.0, metavar="SECONDS",
                        help="seconds a new target stays 'initial' before it turns healthy (default 2)")
    parser.add_argument("--targets-quota", type=int, default=1000, help="targets per target group (default 1000)")
    parser.add_argument("--no-warm-up", action="store_true",
                        help="do not build the EC2/ELBv2 backends before reporting ready")
    parser.add_argument("--quiet", action="store_true", help="do not log every request")
    args = parser.parse_args(argv)

    t0 = time.monotonic()
    moto_patches.apply()
    initial = {"healthyAfterSeconds": args.healthy_after, "targetsPerGroupQuota": args.targets_quota}
    moto_patches.CONFIG.update(initial)

    import logging

    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from werkzeug.serving import make_server

    if args.quiet:
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
    moto_app = DomainDispatcherApplication(create_backend_app)
    app = Launcher(moto_app, initial)
    server = make_server(args.host, args.port, app, threaded=True, request_handler=MotoRequestHandler)
    host, port = server.server_address[:2]
    url = f"http://{host}:{port}"
    thread = threading.Thread(target=server.serve_forever, name="moto-server", daemon=True)
    thread.start()

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())

    if not args.no_warm_up:
        _warm_up(moto_app)
    # Report ready only once the server answers over HTTP.
    deadline = time.monotonic() + 30
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy
    while True:
        try:
            with opener.open(f"{url}{CONTROL_PREFIX}health", timeout=2) as resp:
                if resp.status == 200:
                    break
        except OSError:
            if time.monotonic() > deadline:
                print(f"moto_launcher: {url} did not answer within 30 s", file=sys.stderr)
                return 1
            time.sleep(0.05)
    if args.ready_file and not stop.is_set():
        _write_ready(args.ready_file, url)
    print(f"moto_launcher: moto {moto_patches.MOTO_VERSION} ready at {url} in {time.monotonic() - t0:.2f} s "
          f"(pid {os.getpid()})", file=sys.stderr, flush=True)

    while not stop.wait(1.0):
        pass
    print("moto_launcher: stopping", file=sys.stderr, flush=True)
    server.shutdown()
    thread.join(timeout=5)
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
