"""The scale benchmark's driver (run by scripts/bench, which builds the agent and starts the sandbox).

usage: bench.py SANDBOX_DIR AGENT_BINARY
       (settings from the environment: N M K U CHURN INSTANCE_EVERY TIMEOUT SEED_THREADS)

Against the sandbox's real API server (kube-apiserver; the bench as its admin, SANDBOX_DIR/kubeconfig;
the agent as its ServiceAccount through the fault proxy, SANDBOX_DIR/agent-kubeconfig): seeds N
target groups and N bindings of M endpoints each (every INSTANCE_EVERY-th binding in instance mode,
on a pool of M nodes out of K), plus U EndpointSlices no binding references; runs the agent to all
Ready, adds one binding, rolls CHURN (default 100) ip Services at once (one endpoint terminating, one
new ready: timed from each EndpointSlice update to the DeregisterTargets/RegisterTargets the AWS
emulator's write log shows), forces a relist of its watches (faults armed on the fault proxy only
the agent goes through), restarts it with nothing changed, and prints what it measured. Watch
streams and LIST requests come from the API server's own /metrics, which count every client (the
controllers and the simulated kubelet too): the agent's share is the difference from a sample taken
before it started. Figures only: nothing here passes or fails on a timing.
"""

import base64
import http.client
import json
import math
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import boto3

SERVICE_NAME = "kubernetes.io/service-name"
NS, NOISE_NS = "bench", "bench-noise"
WRITE_RATE, WRITE_BURST, BATCH = 4.0, 20, 200  # the agent's RegisterTargets budget and batch size


def setting(name, default):
    return int(os.environ.get(name) or default)


N, M, K, U = setting("N", 40), setting("M", 10), setting("K", 20), setting("U", 2000)
CHURN = setting("CHURN", 100)
INSTANCE_EVERY = setting("INSTANCE_EVERY", 5)
TIMEOUT = setting("TIMEOUT", 900)
SEED_THREADS = setting("SEED_THREADS", 16)  # parallel creates; the admin is exempt from API priority and fairness
# The EndpointSlice controller only touches slices labelled as its own (managed-by
# endpointslice-controller.k8s.io) and only for Services with a selector: the bench's Services have
# none and its hand-written slices carry this label instead, the way any other slice manager does.
MANAGED_BY = {"endpointslice.kubernetes.io/managed-by": "bench.tgb-agent.io"}


def log(msg):
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def read_kubeconfig(path):
    """(server, CA PEM, token) of a kubeconfig with one cluster and one token user (the sandbox's):
    JSON, or the flat YAML scripts/sandbox writes, read key by key (the first of each)."""
    text = open(path).read()
    try:
        config = json.loads(text)
        cluster, user = config["clusters"][0]["cluster"], config["users"][0]["user"]
        server, ca, token = cluster["server"], cluster["certificate-authority-data"], user["token"]
    except ValueError:
        fields = {}
        for line in text.splitlines():
            key, sep, value = line.strip().lstrip("- ").partition(":")
            if sep and value.strip():
                fields.setdefault(key.strip(), value.strip().strip("'\""))
        server, ca, token = fields["server"], fields["certificate-authority-data"], fields["token"]
    return server, base64.b64decode(ca).decode(), token


class KubeError(Exception):
    def __init__(self, method, path, status, body):
        super().__init__(f"{method} {path}: HTTP {status}: {body[:500]!r}")
        self.status = status


class Kube:
    """The real API server as the sandbox's admin: https verified with the sandbox CA, bearer token
    (both from the kubeconfig). One keep-alive connection per thread; 429s (priority and fairness)
    are waited out and counted."""

    def __init__(self, kubeconfig):
        server, ca, self.token = read_kubeconfig(kubeconfig)
        url = urllib.parse.urlsplit(server)
        self.host, self.port = url.hostname, url.port or 443
        self.tls = ssl.create_default_context(cadata=ca)
        self.local = threading.local()
        self.throttled = 0

    def request(self, method, path, body=None, content_type="application/json", accept="application/json"):
        """(status, body bytes); raises KubeError on 4xx/5xx other than 429."""
        data = None if body is None else json.dumps(body).encode()
        headers = {"Authorization": f"Bearer {self.token}", "Accept": accept}
        if data is not None:
            headers["Content-Type"] = content_type
        for attempt in range(30):
            conn = getattr(self.local, "conn", None)
            reused = conn is not None
            if conn is None:
                conn = self.local.conn = http.client.HTTPSConnection(self.host, self.port, context=self.tls,
                                                                      timeout=120)
            try:
                conn.request(method, path, body=data, headers=headers)
                resp = conn.getresponse()
                payload = resp.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                conn.close()
                self.local.conn = None
                if reused and attempt == 0:  # an idle keep-alive connection the server closed: once more
                    continue
                raise
            if resp.status == 429:
                self.throttled += 1
                time.sleep(float(resp.getheader("Retry-After") or 1))
                continue
            if resp.status >= 400:
                raise KubeError(method, path, resp.status, payload)
            return resp.status, payload
        raise KubeError(method, path, 429, b"still throttled after 30 tries")

    def call(self, method, path, body=None):
        return json.loads(self.request(method, path, body)[1] or b"null")

    def create(self, path, obj):
        return self.call("POST", path, obj)

    def merge_patch(self, path, patch):
        return json.loads(self.request("PATCH", path, patch, content_type="application/merge-patch+json")[1])

    def metrics(self):
        """The API server's /metrics (Prometheus text)."""
        return self.request("GET", "/metrics", accept="text/plain")[1].decode()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_env(path):
    env = {}
    for line in open(path):
        line = line.strip()
        if line.startswith("export ") and "=" in line:
            k, v = line[len("export "):].split("=", 1)
            if k != "PATH":  # '...':"$PATH", for a shell
                env[k] = v.strip("'\"")
    return env


def ip_of(n):
    """The n-th endpoint address, inside the VPC's 10.0.0.0/16."""
    return f"10.0.{n // 250}.{n % 250 + 1}"


def noise_ip(n):
    """Addresses of the unrelated slices, outside the bindings' range."""
    return f"10.{1 + n // 62500 % 200}.{n // 250 % 250}.{n % 250 + 1}"


def slice_obj(name, service, ips, ns):
    return {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": ns, "labels": {SERVICE_NAME: service, **MANAGED_BY}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [{"addresses": [ip], "conditions": {"ready": True},
                       "targetRef": {"kind": "Pod", "name": f"{name}-{i}", "namespace": ns}}
                      for i, ip in enumerate(ips)],
    }


def seed(kube, env):
    aws = dict(endpoint_url=env["AWS_ENDPOINT_URL"], region_name=env.get("AWS_REGION", "us-east-1"),
               aws_access_key_id=env["AWS_ACCESS_KEY_ID"], aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])
    ec2, elbv2 = boto3.client("ec2", **aws), boto3.client("elbv2", **aws)
    t0 = time.monotonic()
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.128.0/17", AvailabilityZone="us-east-1a")["Subnet"]["SubnetId"]
    instances = []
    while len(instances) < K:
        count = min(100, K - len(instances))
        run = ec2.run_instances(ImageId="ami-12c6146b", MinCount=count, MaxCount=count, SubnetId=subnet)
        instances += [i["InstanceId"] for i in run["Instances"]]
    pools = max(1, K // M)
    targets = []  # per binding: number of targets it should register
    arns = []
    for i in range(N):
        instance = INSTANCE_EVERY > 0 and i % INSTANCE_EVERY == INSTANCE_EVERY - 1 and K > 0
        tg = elbv2.create_target_group(Name=f"bench-{i}", Protocol="HTTP", Port=80, VpcId=vpc,
                                       TargetType="instance" if instance else "ip")
        arns.append((tg["TargetGroups"][0]["TargetGroupArn"], instance))
    log(f"AWS seeded in {time.monotonic() - t0:.0f} s: {N} target groups, {K} instances")

    t0 = time.monotonic()
    for ns in (NS, NOISE_NS):
        kube.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    # Nodes as a kubelet registers them (Ready; the sandbox runs no node-lifecycle controller to
    # expire that), each an instance of the emulator.
    ready = {"type": "Ready", "status": "True", "reason": "KubeletReady",
             "lastHeartbeatTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
             "lastTransitionTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    creates = [("/api/v1/nodes", {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": f"node-{k}", "labels": {"pool": f"p{k % pools}"}},
        "spec": {"providerID": f"aws:///us-east-1a/{instance_id}"},
        "status": {"conditions": [ready]},
    }) for k, instance_id in enumerate(instances)]
    for i, (arn, instance) in enumerate(arns):
        name = f"svc-{i}"
        port = {"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}
        if instance:
            port["nodePort"] = 30000 + i % 2000
        # No selector: the slices below are the bench's, not the EndpointSlice controller's.
        creates.append((f"/api/v1/namespaces/{NS}/services", {
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": NS},
            "spec": {"type": "NodePort" if instance else "ClusterIP", "ports": [port]},
        }))
        creates.append((f"/apis/discovery.k8s.io/v1/namespaces/{NS}/endpointslices",
                        slice_obj(f"{name}-a", name, [ip_of(i * M + j) for j in range(M)], NS)))
        spec = {"serviceRef": {"name": name, "port": 80}, "targetGroupARN": arn,
                "targetType": "instance" if instance else "ip"}
        if instance:
            spec["nodeSelector"] = {"matchLabels": {"pool": f"p{i % pools}"}}
            targets.append(len([k for k in range(K) if k % pools == i % pools]))
        else:
            targets.append(M)
        creates.append((f"/apis/elbv2.k8s.aws/v1beta1/namespaces/{NS}/targetgroupbindings", {
            "apiVersion": "elbv2.k8s.aws/v1beta1", "kind": "TargetGroupBinding",
            "metadata": {"name": f"tgb-{i}", "namespace": NS}, "spec": spec,
        }))
    for u in range(U):
        creates.append((f"/apis/discovery.k8s.io/v1/namespaces/{NOISE_NS}/endpointslices",
                        slice_obj(f"noise-{u}", f"noise-{u}", [noise_ip(u * 5 + e) for e in range(5)], NOISE_NS)))
    with ThreadPoolExecutor(max_workers=SEED_THREADS) as pool:
        list(pool.map(lambda c: kube.create(*c), creates))
    log(f"Kubernetes seeded in {time.monotonic() - t0:.0f} s: {len(creates) + 2} objects ({K} nodes, {N} Services, "
        f"slices and bindings, {U} unrelated slices; {SEED_THREADS} threads, {kube.throttled} answers 429)")
    return targets, arns, lambda name: elbv2.create_target_group(
        Name=name, Protocol="HTTP", Port=80, VpcId=vpc, TargetType="ip")["TargetGroups"][0]["TargetGroupArn"]


def target_writes(aws_url):
    with urllib.request.urlopen(aws_url + "/_launcher/calls/log", timeout=60) as resp:
        return json.loads(resp.read())["targetWrites"]


def churn(kube, aws_url, arns):
    """CHURN Services roll at once: in each, one ready endpoint starts terminating (still serving) and a
    new one turns ready, in one EndpointSlice update. Returns: how many rolled; per Service, the
    seconds from its update to the first successful DeregisterTargets of the old address and
    RegisterTargets of the new one (nan when missing after TIMEOUT); the times (after the first
    update) of the registrations sent before the last of those deregistrations; when the last update
    was made; when the last of those writes was sent; and the AWS calls the burst caused."""
    rolling = [i for i, (_, instance) in enumerate(arns) if not instance][:CHURN]
    aws_reset(aws_url)
    changes = {}  # i -> (old ip, new ip, time of the update)

    def roll(k, i):
        old, new = ip_of(i * M), ip_of(N * M + M + k)
        endpoints = [{"addresses": [old], "conditions": {"ready": False, "serving": True, "terminating": True},
                      "targetRef": {"kind": "Pod", "name": f"svc-{i}-a-0", "namespace": NS}}]
        endpoints += [{"addresses": [ip_of(i * M + j)], "conditions": {"ready": True},
                       "targetRef": {"kind": "Pod", "name": f"svc-{i}-a-{j}", "namespace": NS}} for j in range(1, M)]
        endpoints.append({"addresses": [new], "conditions": {"ready": True},
                          "targetRef": {"kind": "Pod", "name": f"svc-{i}-a-new", "namespace": NS}})
        sent = time.time()
        kube.merge_patch(f"/apis/discovery.k8s.io/v1/namespaces/{NS}/endpointslices/svc-{i}-a",
                         {"endpoints": endpoints})
        changes[i] = (old, new, sent)

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda a: roll(*a), enumerate(rolling)))
    start = min(t for _, _, t in changes.values())

    def first(writes, action, arn, ip, since):
        return next((w["time"] for w in writes if w["action"] == action and w["status"] < 400
                     and w["targetGroupArn"] == arn and w["time"] >= since
                     and {"id": ip, "port": 8080} in w["targets"]), None)

    while True:
        writes = target_writes(aws_url)
        seen = {i: (first(writes, "DeregisterTargets", arns[i][0], old, t),
                    first(writes, "RegisterTargets", arns[i][0], new, t)) for i, (old, new, t) in changes.items()}
        if all(d is not None and r is not None for d, r in seen.values()) or time.time() - start > TIMEOUT:
            break
        time.sleep(0.5)
    lag = lambda w, i: w - changes[i][2] if w is not None else float("nan")  # noqa: E731
    deregistered = [lag(d, i) for i, (d, _) in seen.items()]
    registered = [lag(r, i) for i, (_, r) in seen.items()]
    last = max((w for pair in seen.values() for w in pair if w is not None), default=start)
    last_deregistration = max((d for d, _ in seen.values() if d is not None), default=start)
    early = sorted(r - start for _, r in seen.values() if r is not None and r < last_deregistration)
    updated = max(t for _, _, t in changes.values()) - start
    return len(rolling), deregistered, registered, early, updated, last - start, settle(aws_url)


def percentiles(values):
    """p50, p99 and max of values (nan when any value is missing, so a gap cannot hide)."""
    if not values or any(math.isnan(v) for v in values):
        return float("nan"), float("nan"), float("nan")
    ordered = sorted(values)
    at = lambda q: ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]  # noqa: E731
    return at(0.50), at(0.99), ordered[-1]


def late_binding(kube, create_group):
    """A Service, its slice and a binding created while the agent runs: seconds until Ready."""
    arn, name = create_group("bench-late"), "svc-late"
    kube.create(f"/api/v1/namespaces/{NS}/services", {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": NS},
        "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]},
    })
    kube.create(f"/apis/discovery.k8s.io/v1/namespaces/{NS}/endpointslices",
                slice_obj(f"{name}-a", name, [ip_of(N * M + j) for j in range(M)], NS))
    path = f"/apis/elbv2.k8s.aws/v1beta1/namespaces/{NS}/targetgroupbindings"
    t0 = time.monotonic()
    kube.create(path, {"apiVersion": "elbv2.k8s.aws/v1beta1", "kind": "TargetGroupBinding",
                       "metadata": {"name": "tgb-late", "namespace": NS},
                       "spec": {"serviceRef": {"name": name, "port": 80}, "targetGroupARN": arn, "targetType": "ip"}})
    while time.monotonic() - t0 < 60:
        conditions = (kube.call("GET", f"{path}/tgb-late").get("status") or {}).get("conditions") or []
        if any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions):
            return time.monotonic() - t0
        time.sleep(0.05)
    return float("nan")


class Agent:
    def __init__(self, binary, sandbox, env, name):
        self.metrics = f"127.0.0.1:{free_port()}"
        self.log_path = os.path.join(sandbox, f"bench-agent-{name}.log")
        agent_env = {**os.environ, **env, "KUBECONFIG": os.path.join(sandbox, "agent-kubeconfig"), "RUST_LOG": "info"}
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [binary, "run", "--cluster-name", "bench", "--leader-elect=false", "--drift-interval", "60m",
             "--metrics-addr", self.metrics, "--health-addr", f"127.0.0.1:{free_port()}",
             "--webhook-addr", f"127.0.0.1:{free_port()}"],
            env=agent_env, stdout=subprocess.DEVNULL, stderr=open(self.log_path, "w"))

    def status_value(self, field):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        return 0

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def ready_count(kube):
    items = kube.call("GET", f"/apis/elbv2.k8s.aws/v1beta1/namespaces/{NS}/targetgroupbindings")["items"]
    return sum(1 for b in items for c in (b.get("status") or {}).get("conditions") or []
               if c.get("type") == "Ready" and c.get("status") == "True")


def aws_calls(aws_url):
    with urllib.request.urlopen(aws_url + "/_launcher/calls", timeout=30) as resp:
        calls = json.loads(resp.read())
    return {op: c["total"] for service in calls.values() for op, c in service.items()}


def aws_reset(aws_url):
    urllib.request.urlopen(urllib.request.Request(aws_url + "/_launcher/calls/reset", data=b"{}", method="POST"),
                           timeout=30).read()


def samples(text, name):
    """(labels, value) of each sample of metric `name` in Prometheus text."""
    for line in text.splitlines():
        if line.startswith(name + "{"):
            labels, _, value = line.rpartition(" ")
            yield dict(re.findall(r'(\w+)="([^"]*)"', labels)), float(value)


def watch_streams(kube):
    """Open WATCH requests at the API server by resource, every client's (apiserver_longrunning_requests)."""
    counts = {}
    for labels, value in samples(kube.metrics(), "apiserver_longrunning_requests"):
        if labels.get("verb") == "WATCH":
            resource = ".".join(filter(None, (labels.get("resource"), labels.get("group"))))
            counts[resource] = counts.get(resource, 0) + int(value)
    return counts


def other_watches(kube, limit=90):
    """The watch streams other clients keep open, once steady: kube-controller-manager's garbage
    collector starts watching the bindings only when its discovery resync (every 30 s) finds the CRD
    the sandbox installed after it started, so that one is waited for too (up to `limit` s)."""
    t0, last, since = time.monotonic(), None, time.monotonic()
    while True:
        now = watch_streams(kube)
        if now != last:
            last, since = now, time.monotonic()
        if now.get("targetgroupbindings.elbv2.k8s.aws", 0) > 0 and time.monotonic() - since >= 3:
            return now
        if time.monotonic() - t0 > limit:
            log(f"the other clients' watch streams were not steady after {limit} s: the agent's count may be off")
            return now
        time.sleep(0.5)


def more_than(now, baseline):
    """Per resource, the streams open now beyond those open in the baseline (zeros left out)."""
    return {r: now.get(r, 0) - baseline.get(r, 0) for r in now.keys() | baseline.keys()
            if now.get(r, 0) != baseline.get(r, 0)}


def list_requests(kube, resource):
    """LIST requests of `resource` the API server has answered, every client's and every page
    (apiserver_request_total)."""
    return int(sum(value for labels, value in samples(kube.metrics(), "apiserver_request_total")
                   if labels.get("verb") == "LIST" and labels.get("resource") == resource
                   and not labels.get("subresource")))


def faults(url, method, body=None):
    """The fault proxy in front of the API server (only the agent's requests go through it)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url + "/faults", method=method, data=data,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def settle(aws_url, quiet=3.0):
    """Waits until the AWS call counters have not moved for `quiet` seconds."""
    last, since = None, time.monotonic()
    while True:
        now = aws_calls(aws_url)
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return now
        time.sleep(0.5)


def main():
    sandbox, binary = sys.argv[1], sys.argv[2]
    env = read_env(os.path.join(sandbox, "env"))
    kube = Kube(os.path.join(sandbox, "kubeconfig"))
    faults_url = open(os.path.join(sandbox, "faults.url")).readline().strip().rstrip("/")
    aws_url = env["AWS_ENDPOINT_URL"].rstrip("/")
    targets, arns, create_group = seed(kube, env)
    endpoints = N * M
    calls = sum(math.ceil(t / BATCH) for t in targets if t)
    floor = max(0.0, (calls - WRITE_BURST) / WRITE_RATE)

    # Cold start. The controllers and the simulated kubelet watch too: their streams, open before the
    # agent starts, are the baseline the agent's are counted from (the fault proxy's count of the
    # agent's own watches is printed next to that difference as a check).
    faults(faults_url, "DELETE")
    baseline = other_watches(kube)
    aws_reset(aws_url)
    agent = Agent(binary, sandbox, env, "cold")
    poll = max(0.5, N / 500)
    peak_w = peak_proxy = 0
    while True:
        peak_w = max(peak_w, sum(more_than(watch_streams(kube), baseline).values()))
        peak_proxy = max(peak_proxy, faults(faults_url, "GET")["watchesOpen"])
        if (ready := ready_count(kube)) >= N:
            break
        if agent.proc.poll() is not None:
            sys.exit(f"bench: the agent exited ({agent.proc.returncode}); see {agent.log_path}")
        if time.monotonic() - agent.started > TIMEOUT:
            sys.exit(f"bench: only {ready}/{N} Ready after {TIMEOUT} s; see {agent.log_path}")
        time.sleep(poll)
    cold = time.monotonic() - agent.started
    cold_calls = settle(aws_url)
    by_resource = more_than(watch_streams(kube), baseline)
    open_w, open_proxy = sum(by_resource.values()), faults(faults_url, "GET")["watchesOpen"]
    peak_w, peak_proxy = max(peak_w, open_w), max(peak_proxy, open_proxy)
    cold_hwm, cold_rss = agent.status_value("VmHWM"), agent.status_value("VmRSS")
    cold_threads = agent.status_value("Threads")
    late = late_binding(kube, create_group)
    settle(aws_url)
    rolled, deregistered, registered, early_at, updated, burst, burst_calls = churn(kube, aws_url, arns)

    # A relist of every watch (dropped streams, then 410 Expired), while the agent is in steady
    # state: armed on the fault proxy, which also counts the agent's open watches exactly.
    lists_before = list_requests(kube, "endpointslices")
    open_before = faults(faults_url, "GET")["watchesOpen"]
    faults(faults_url, "POST", {"dropWatches": True, "expireNextWatch": 4})
    t0, since = time.monotonic(), None
    while time.monotonic() - t0 < TIMEOUT:  # until every watch is open again (after its relist) for 3 s
        time.sleep(0.5)
        if faults(faults_url, "GET")["watchesOpen"] < open_before:
            since = None
        elif since is None:
            since = time.monotonic()
        elif time.monotonic() - since >= 3:
            break
    relist = since - t0 if since else float("nan")
    relist_pages = list_requests(kube, "endpointslices") - lists_before
    relist_hwm, relist_rss = agent.status_value("VmHWM"), agent.status_value("VmRSS")
    faults(faults_url, "DELETE")
    agent.stop()

    # Restart with nothing changed.
    aws_reset(aws_url)
    agent = Agent(binary, sandbox, env, "restart")
    # With no fingerprint of its inputs yet, the new agent reads every group's targets once.
    while aws_calls(aws_url).get("DescribeTargetHealth", 0) < N:
        if agent.proc.poll() is not None or time.monotonic() - agent.started > TIMEOUT:
            sys.exit(f"bench: the restarted agent did not read every target group; see {agent.log_path}")
        time.sleep(0.5)
    restart = time.monotonic() - agent.started
    restart_calls = settle(aws_url)
    restart_hwm = agent.status_value("VmHWM")
    agent.stop()

    mib = lambda kib: kib / 1024  # noqa: E731
    per_k = lambda kib: mib(kib) / (endpoints / 1000) if endpoints else 0.0  # noqa: E731
    mutating = {op: n for op, n in restart_calls.items() if not op.startswith("Describe") and n}
    instance_bindings = sum(1 for i in range(N) if INSTANCE_EVERY > 0 and i % INSTANCE_EVERY == INSTANCE_EVERY - 1
                            and K > 0)
    print(f"\n## tgb-agent scale benchmark: N={N} M={M} K={K} U={U} INSTANCE_EVERY={INSTANCE_EVERY}\n")
    print(f"{N} bindings ({N - instance_bindings} ip, {instance_bindings} instance), {endpoints} endpoints, "
          f"{sum(targets)} targets, {K} nodes, {U} unrelated EndpointSlices\n")
    print("| figure | measured |")
    print("|---|---|")
    print(f"| cold start to all Ready | {cold:.1f} s |")
    print(f"| write-budget floor ({calls} RegisterTargets at {WRITE_RATE:g}/s burst {WRITE_BURST}) | {floor:.1f} s"
          f" ({f'{(cold / floor - 1) * 100:+.0f}%' if floor else 'within the burst'}) |")
    print(f"| a binding of a new Service created after start: to Ready | {late:.2f} s |")
    print(f"| peak RSS (VmHWM) after cold start | {mib(cold_hwm):.1f} MiB ({per_k(cold_hwm):.2f} MiB per 1,000 "
          f"endpoints) |")
    print(f"| RSS after cold start (VmRSS) | {mib(cold_rss):.1f} MiB; {cold_threads} threads |")
    print(f"| peak RSS through a forced relist of every watch | {mib(relist_hwm):.1f} MiB (VmRSS {mib(relist_rss):.1f});"
          f" watches open again after {relist:.1f} s; EndpointSlice LIST requests meanwhile: {relist_pages}"
          f" (API server's apiserver_request_total, every client's) |")
    print(f"| the agent's watch streams at the API server (apiserver_longrunning_requests WATCH, less the "
          f"{sum(baseline.values())} of other clients open before it started) | {open_w} "
          f"({', '.join(f'{r}: {n}' for r, n in sorted(by_resource.items()))}); peak {peak_w} sampled through the cold "
          f"start; at the fault proxy: {open_proxy}, peak {peak_proxy} |")
    print(f"| AWS calls, cold start | {', '.join(f'{op} {n}' for op, n in sorted(cold_calls.items()) if n)} |")
    fmt = lambda v: "missing" if math.isnan(v) else f"{v:.2f} s"  # noqa: E731
    print(f"| {rolled} Services roll at once: endpoint terminating → DeregisterTargets sent, p50 / p99 / max | "
          f"{' / '.join(fmt(v) for v in percentiles(deregistered))} |")
    print(f"| same burst: endpoint ready → RegisterTargets sent, p50 / p99 / max | "
          f"{' / '.join(fmt(v) for v in percentiles(registered))} |")
    print(f"| same burst: registrations sent before the last deregistration | {len(early_at)}"
          f"{' (at ' + ', '.join(f'{t:.2f}' for t in early_at) + ' s)' if early_at else ''};"
          f" the {rolled} updates were made within {updated:.2f} s |")
    print(f"| same burst: until every write was sent | {burst:.2f} s |")
    print(f"| same burst: AWS calls | {', '.join(f'{op} {n}' for op, n in sorted(burst_calls.items()) if n)} |")
    print(f"| restart, nothing changed: every group read once | {restart:.1f} s; peak RSS {mib(restart_hwm):.1f} MiB |")
    print(f"| restart: mutating AWS calls | {sum(mutating.values())} {mutating if mutating else ''} |")
    print(f"| restart: DescribeTargetGroups calls | {restart_calls.get('DescribeTargetGroups', 0)} |")
    print(f"| restart: all AWS calls | {', '.join(f'{op} {n}' for op, n in sorted(restart_calls.items()) if n)} |")


if __name__ == "__main__":
    main()
