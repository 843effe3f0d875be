"""AWS side of scripts/demo, against the sandbox's moto (AWS_ENDPOINT_URL and credentials from DIR/env).

    demo_aws.py seed [ENV_FILE]      create what terraform/ + examples/ip-mode and examples/instance-mode
                                     would: VPC, two subnets, the ALB's security group, the ALB, target
                                     group demo-web-ip (ip, HTTP:8080, 5 s deregistration delay), HTTP:80
                                     listener; the worker nodes' security group (tagged
                                     kubernetes.io/cluster/demo = owned, one hand-made SSH rule), one
                                     instance per subnet in it, target group demo-web-instance (instance,
                                     HTTP:30080, 5 s deregistration delay); prints the ip target group's
                                     ARN, and writes the ids the demo needs to ENV_FILE as shell
                                     assignments (demo_* variables, see seed())
    demo_aws.py targets ARN_OR_NAME  the target group's targets as a table: id, port, state
    demo_aws.py active ARN_OR_NAME   one line: the non-draining targets as sorted id:port, comma-separated
    demo_aws.py watch-healthy ARN    samples the target group's health every 0.2 s until SIGTERM or
                                     SIGINT; prints each change of the per-state counts as it happens,
                                     then "min healthy N over K samples" (K = 0: no sample succeeded)
    demo_aws.py rules GROUP_ID       the security group's ingress rules as a table: protocol, ports, peer,
                                     and the tgb-agent.elbv2.k8s.aws/cluster tag (the agent's rules)
    demo_aws.py agent-rules GROUP_ID one line: the ingress rules tagged as the agent's, sorted
                                     "proto from-to peer cluster", comma-separated
    demo_aws.py calls                the AWS calls the agent made (the launcher's counters minus this
                                     helper's own calls since seed); fails if it never registered and
                                     deregistered targets, or never authorized and revoked a rule

This helper's own calls after `seed` are tallied in $DEMO_CALLS_FILE (JSON, under a lock: watch-healthy
runs alongside the other subcommands) so `calls` can leave them out.
"""

import fcntl
import json
import os
import shlex
import signal
import sys
import time
import urllib.request

import boto3

NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def launcher(path, method="GET"):
    url = os.environ["AWS_ENDPOINT_URL"].rstrip("/") + "/_launcher/" + path
    with NO_PROXY.open(urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)) as r:
        return json.load(r)


def tally_file():
    return os.environ.get("DEMO_CALLS_FILE")


def read_tally():
    try:
        with open(tally_file()) as f:
            return json.load(f)
    except (TypeError, FileNotFoundError):
        return {}


def counted_client(service):
    """A boto3 client whose calls are added to the tally file."""
    client = boto3.client(service)

    def count(model, **_):
        if tally_file():
            with open(tally_file() + ".lock", "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                tally = read_tally()
                ops = tally.setdefault(service, {})
                ops[model.name] = ops.get(model.name, 0) + 1
                with open(tally_file() + ".tmp", "w") as f:
                    json.dump(tally, f)
                os.replace(tally_file() + ".tmp", tally_file())

    client.meta.events.register("before-call.*.*", count)
    return client

NAME = "demo"
TG_NAME = "demo-web-ip"
INSTANCE_TG_NAME = "demo-web-instance"
NODE_PORT = 30080  # examples/instance-mode/service.yaml
DRAIN_SECONDS = "5"
AMI = "ami-12c6146b"  # any id does in moto
RULE_TAG = "tgb-agent.elbv2.k8s.aws/cluster"
MANAGED_TAG = "tgb-agent.elbv2.k8s.aws/managed"
CLAIM_PREFIX = "tgb-agent.elbv2.k8s.aws/claim/"


def seed(env_file=None):
    ec2 = boto3.client("ec2")
    elbv2 = boto3.client("elbv2")
    azs = ["us-east-1a", "us-east-1b"]
    vpc_id = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnets = [
        ec2.create_subnet(VpcId=vpc_id, CidrBlock=f"10.0.{i}.0/24", AvailabilityZone=az)["Subnet"]["SubnetId"]
        for i, az in enumerate(azs)
    ]
    sg = ec2.create_security_group(
        GroupName=f"{NAME}-lb", Description=f"Load balancer {NAME}", VpcId=vpc_id
    )["GroupId"]
    ec2.authorize_security_group_ingress(
        GroupId=sg,
        IpPermissions=[{"IpProtocol": "tcp", "FromPort": 80, "ToPort": 80, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}],
    )
    lb_arn = elbv2.create_load_balancer(Name=NAME, Type="application", Subnets=subnets, SecurityGroups=[sg])[
        "LoadBalancers"
    ][0]["LoadBalancerArn"]
    tg_arn = elbv2.create_target_group(
        Name=TG_NAME, Protocol="HTTP", Port=8080, VpcId=vpc_id, TargetType="ip", HealthCheckPath="/"
    )["TargetGroups"][0]["TargetGroupArn"]
    elbv2.modify_target_group_attributes(
        TargetGroupArn=tg_arn,
        Attributes=[{"Key": "deregistration_delay.timeout_seconds", "Value": DRAIN_SECONDS}],
    )
    elbv2.create_listener(
        LoadBalancerArn=lb_arn,
        Protocol="HTTP",
        Port=80,
        DefaultActions=[{"Type": "forward", "TargetGroupArn": tg_arn}],
    )

    # examples/instance-mode: the worker nodes (their security group, tagged for the cluster as EKS
    # does, and one instance per subnet in it) and the instance target group on the NodePort.
    node_sg = ec2.create_security_group(
        GroupName=f"{NAME}-nodes", Description=f"Worker nodes of cluster {NAME}", VpcId=vpc_id
    )["GroupId"]
    ec2.create_tags(Resources=[node_sg], Tags=[{"Key": f"kubernetes.io/cluster/{NAME}", "Value": "owned"}])
    ec2.authorize_security_group_ingress(  # hand-made: the agent must leave it alone
        GroupId=node_sg,
        IpPermissions=[{"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "10.0.0.0/16"}]}],
    )
    instances = []
    for subnet, az in zip(subnets, azs):
        i = ec2.run_instances(ImageId=AMI, MinCount=1, MaxCount=1, SubnetId=subnet, SecurityGroupIds=[node_sg])[
            "Instances"
        ][0]
        ip = i["PrivateIpAddress"]
        instances.append((i["InstanceId"], az, f"ip-{ip.replace('.', '-')}.ec2.internal"))
    instance_tg_arn = elbv2.create_target_group(
        Name=INSTANCE_TG_NAME, Protocol="HTTP", Port=NODE_PORT, VpcId=vpc_id, TargetType="instance", HealthCheckPath="/"
    )["TargetGroups"][0]["TargetGroupArn"]
    elbv2.modify_target_group_attributes(
        TargetGroupArn=instance_tg_arn,
        Attributes=[{"Key": "deregistration_delay.timeout_seconds", "Value": DRAIN_SECONDS}],
    )

    print(f"vpc {vpc_id}, subnets {' '.join(subnets)}, security group {sg}", file=sys.stderr)
    print(f"load balancer {lb_arn}", file=sys.stderr)
    print(f"listener HTTP:80 -> target group {TG_NAME} (ip, HTTP:8080, deregistration delay {DRAIN_SECONDS} s)", file=sys.stderr)
    print(f"node security group {node_sg} (tagged kubernetes.io/cluster/{NAME}=owned)", file=sys.stderr)
    for id_, az, node in instances:
        print(f"instance {id_} in {az} (node {node}), in {node_sg}", file=sys.stderr)
    print(
        f"target group {INSTANCE_TG_NAME} (instance, HTTP:{NODE_PORT}, deregistration delay {DRAIN_SECONDS} s)",
        file=sys.stderr,
    )
    if env_file:
        values = {
            "demo_ip_tg_arn": tg_arn,
            "demo_instance_tg_arn": instance_tg_arn,
            "demo_lb_sg": sg,
            "demo_node_sg": node_sg,
            "demo_instance_ids": " ".join(i[0] for i in instances),
            "demo_instance_azs": " ".join(i[1] for i in instances),
            "demo_node_names": " ".join(i[2] for i in instances),
        }
        with open(env_file + ".tmp", "w") as f:
            f.writelines(f"{k}={shlex.quote(v)}\n" for k, v in values.items())
        os.replace(env_file + ".tmp", env_file)
    launcher("calls/reset", "POST")  # from here on, count only the agent's calls (and tally ours)
    if tally_file():
        with open(tally_file(), "w") as f:
            json.dump({}, f)
    print(tg_arn)


def health(ref):
    elbv2 = counted_client("elbv2")
    if not ref.startswith("arn:"):
        ref = elbv2.describe_target_groups(Names=[ref])["TargetGroups"][0]["TargetGroupArn"]
    rows = [
        (d["Target"]["Id"], d["Target"]["Port"], d["TargetHealth"]["State"])
        for d in elbv2.describe_target_health(TargetGroupArn=ref)["TargetHealthDescriptions"]
    ]
    return sorted(rows, key=lambda r: (sort_key(r[0]), r[1]))


def sort_key(id_):
    """IPs in address order, anything else (instance ids) by name, after them."""
    parts = id_.split(".")
    if len(parts) == 4 and all(p.isdigit() for p in parts):
        return (0, tuple(int(p) for p in parts), "")
    return (1, (), id_)


def targets(ref):
    rows = health(ref)
    width = max([15] + [len(r[0]) + 1 for r in rows])
    print(f"  {'ID':<{width}} {'PORT':<5} STATE")
    for id_, port, state in rows:
        print(f"  {id_:<{width}} {port:<5} {state}")
    if not rows:
        print("  (no targets)")


def active(ref):
    print(",".join(f"{i}:{p}" for i, p, s in health(ref) if "draining" not in s))


def watch_healthy(arn):
    """Samples DescribeTargetHealth every 0.2 s until SIGTERM/SIGINT: the lowest healthy count seen."""
    stop = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.append(True))
    elbv2 = counted_client("elbv2")
    t0 = time.monotonic()
    low, samples, last, errors = None, 0, None, 0
    while not stop:
        try:
            states = [
                d["TargetHealth"]["State"]
                for d in elbv2.describe_target_health(TargetGroupArn=arn)["TargetHealthDescriptions"]
            ]
        except Exception as e:  # a sample lost to a hiccup of the emulator is skipped, not fatal
            errors += 1
            if errors <= 3:
                print(f"  watch-healthy: DescribeTargetHealth failed: {e}", file=sys.stderr, flush=True)
            states = None
        if states is not None:
            samples += 1
            healthy = states.count("healthy")
            low = healthy if low is None else min(low, healthy)
            others = "".join(f", {s} {states.count(s)}" for s in sorted(set(states)) if s != "healthy")
            now = f"healthy {healthy}{others}"
            if now != last:
                print(f"  {time.monotonic() - t0:5.1f} s  {now}", flush=True)
                last = now
        time.sleep(0.2)
    print(f"min healthy {low if low is not None else -1} over {samples} samples", flush=True)


def ingress_rules(group_id):
    """(protocol, ports, peer, the clusters claiming it / "unclaimed" / "-" when no agent made it)."""
    ec2 = counted_client("ec2")
    out = ec2.describe_security_group_rules(Filters=[{"Name": "group-id", "Values": [group_id]}])
    rows = []
    for r in out["SecurityGroupRules"]:
        if r.get("IsEgress"):
            continue
        proto = r.get("IpProtocol", "?")
        lo, hi = r.get("FromPort", -1), r.get("ToPort", -1)
        ports = "all" if proto == "-1" else f"{lo}-{hi}"
        peer = r.get("ReferencedGroupInfo", {}).get("GroupId") or r.get("CidrIpv4") or r.get("CidrIpv6") or "?"
        tags = {t["Key"]: t.get("Value", "") for t in r.get("Tags", [])}
        claims = sorted({tags[RULE_TAG]} if tags.get(RULE_TAG) else set()
                        | {k[len(CLAIM_PREFIX):] for k in tags if k.startswith(CLAIM_PREFIX)})
        if claims:
            tag = "+".join(claims)
        elif MANAGED_TAG in tags or RULE_TAG in tags:
            tag = "unclaimed"  # created by an agent, claimed by no cluster: revoked after a grace
        else:
            tag = "-"
        rows.append(("all" if proto == "-1" else proto, ports, peer, tag))
    return sorted(rows)


def rules(group_id):
    rows = ingress_rules(group_id)
    print(f"  {'PROTOCOL':<8} {'PORTS':<11} {'PEER':<20} MADE BY AN AGENT (claimed by)")
    for proto, ports, peer, tag in rows:
        print(f"  {proto:<8} {ports:<11} {peer:<20} {'no' if tag == '-' else f'yes, {tag}'}")
    if not rows:
        print("  (no ingress rules)")


def agent_rules(group_id):
    print(",".join(" ".join(r) for r in ingress_rules(group_id) if r[3] != "-"))


def calls():
    ours = read_tally()
    rows = []
    for service, ops in sorted(launcher("calls").items()):
        for op, c in sorted(ops.items()):
            total = c["total"] - ours.get(service, {}).get(op, 0)
            if total > 0:
                rows.append((service, op, total, c.get("failed", 0)))
    print(f"  {'SERVICE':<8} {'OPERATION':<32} {'CALLS':>5} {'FAILED':>6}")
    for service, op, total, failed in rows:
        print(f"  {service:<8} {op:<32} {total:>5} {failed:>6}")
    print(f"  {'':<8} {'total':<32} {sum(r[2] for r in rows):>5}")
    made = {(r[0], r[1]) for r in rows}
    missing = {
        ("elbv2", "RegisterTargets"),
        ("elbv2", "DeregisterTargets"),
        ("ec2", "AuthorizeSecurityGroupIngress"),
        ("ec2", "RevokeSecurityGroupIngress"),
    } - made
    if missing:
        sys.exit(f"demo_aws: the agent never called {sorted(missing)}")


def main(argv):
    if argv[:1] == ["seed"] and len(argv) <= 2:
        seed(*argv[1:])
    elif argv == ["calls"]:
        calls()
    elif len(argv) == 2 and argv[0] in ("targets", "active", "watch-healthy", "rules", "agent-rules"):
        {"targets": targets, "active": active, "watch-healthy": watch_healthy, "rules": rules,
         "agent-rules": agent_rules}[argv[0]](argv[1])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
