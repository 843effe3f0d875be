"""AWS side of scripts/demo, against the sandbox's moto (AWS_ENDPOINT_URL and credentials from DIR/env).

    demo_aws.py seed                 create what terraform/ + examples/ip-mode would: VPC, two subnets,
                                     the ALB's security group, the ALB, target group demo-web-ip
                                     (ip, HTTP:8080, 5 s deregistration delay), HTTP:80 listener;
                                     prints the target group's ARN
    demo_aws.py targets ARN_OR_NAME  the target group's targets as a table: id, port, state
    demo_aws.py active ARN_OR_NAME   one line: the non-draining targets as sorted id:port, comma-separated
    demo_aws.py calls                the AWS calls the agent made (the launcher's counters minus this
                                     helper's own calls since seed); fails if it never registered and
                                     deregistered targets

This helper's own calls after `seed` are tallied in $DEMO_CALLS_FILE (JSON) so `calls` can leave them out.
"""

import json
import os
import sys
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
            tally = read_tally()
            ops = tally.setdefault(service, {})
            ops[model.name] = ops.get(model.name, 0) + 1
            with open(tally_file(), "w") as f:
                json.dump(tally, f)

    client.meta.events.register("before-call.*.*", count)
    return client

NAME = "demo"
TG_NAME = "demo-web-ip"
DRAIN_SECONDS = "5"


def seed():
    ec2 = boto3.client("ec2")
    elbv2 = boto3.client("elbv2")
    vpc_id = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnets = [
        ec2.create_subnet(VpcId=vpc_id, CidrBlock=f"10.0.{i}.0/24", AvailabilityZone=az)["Subnet"]["SubnetId"]
        for i, az in enumerate(["us-east-1a", "us-east-1b"])
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
    print(f"vpc {vpc_id}, subnets {' '.join(subnets)}, security group {sg}", file=sys.stderr)
    print(f"load balancer {lb_arn}", file=sys.stderr)
    print(f"listener HTTP:80 -> target group {TG_NAME} (ip, HTTP:8080, deregistration delay {DRAIN_SECONDS} s)", file=sys.stderr)
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
    return sorted(rows, key=lambda r: (tuple(int(x) for x in r[0].split(".")), r[1]))


def targets(ref):
    rows = health(ref)
    print(f"  {'ID':<15} {'PORT':<5} STATE")
    for id_, port, state in rows:
        print(f"  {id_:<15} {port:<5} {state}")
    if not rows:
        print("  (no targets)")


def active(ref):
    print(",".join(f"{i}:{p}" for i, p, s in health(ref) if "draining" not in s))


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
    missing = {("elbv2", "RegisterTargets"), ("elbv2", "DeregisterTargets")} - made
    if missing:
        sys.exit(f"demo_aws: the agent never called {sorted(missing)}")


def main(argv):
    if argv == ["seed"]:
        seed()
    elif argv == ["calls"]:
        calls()
    elif len(argv) == 2 and argv[0] in ("targets", "active"):
        {"targets": targets, "active": active}[argv[0]](argv[1])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
