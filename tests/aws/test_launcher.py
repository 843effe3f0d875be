"""Tests of the patched moto launcher (tests/aws/moto_launcher.py), through boto3 as a client would.

Run: .venv-moto/bin/python -m pytest tests/aws
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from conftest import start_launcher

REPO = Path(__file__).resolve().parents[2]


def health(env: Any, tg: str, targets: list[dict[str, Any]] | None = None) -> dict[tuple[str, int], dict[str, Any]]:
    kwargs = {"TargetGroupArn": tg}
    if targets is not None:
        kwargs["Targets"] = targets
    out = {}
    for d in env.elb.describe_target_health(**kwargs)["TargetHealthDescriptions"]:
        out[(d["Target"]["Id"], d["Target"]["Port"])] = {**d["TargetHealth"], "Target": d["Target"]}
    return out


def error_of(exc: pytest.ExceptionInfo[ClientError]) -> tuple[str, str, int]:
    err = exc.value.response
    return err["Error"]["Code"], err["Error"].get("Message", ""), err["ResponseMetadata"]["HTTPStatusCode"]


def wait_for(predicate: Any, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


# --- health states ---------------------------------------------------------------------------------


def test_new_target_is_initial_then_healthy(aws: Any) -> None:
    aws.elb.register_targets(TargetGroupArn=aws.ip_tg, Targets=[{"Id": "10.0.1.10", "Port": 8080}])
    h = health(aws, aws.ip_tg)[("10.0.1.10", 8080)]
    assert h["State"] == "initial"
    assert h["Reason"] == "Elb.RegistrationInProgress"
    assert h["Description"] == "Target registration is in progress"
    assert wait_for(lambda: health(aws, aws.ip_tg)[("10.0.1.10", 8080)]["State"] == "healthy", 5)
    h = health(aws, aws.ip_tg)[("10.0.1.10", 8080)]
    assert "Reason" not in h


def test_healthy_after_is_configurable(aws: Any) -> None:
    assert aws.moto.control("POST", "config", {"healthyAfterSeconds": 0})["healthyAfterSeconds"] == 0
    aws.elb.register_targets(TargetGroupArn=aws.ip_tg, Targets=[{"Id": "10.0.1.10", "Port": 80}])
    assert health(aws, aws.ip_tg)[("10.0.1.10", 80)]["State"] == "healthy"
    aws.moto.control("POST", "config", {"healthyAfterSeconds": 60})
    aws.elb.register_targets(TargetGroupArn=aws.ip_tg, Targets=[{"Id": "10.0.1.11", "Port": 80}])
    assert health(aws, aws.ip_tg)[("10.0.1.11", 80)]["State"] == "initial"


def test_target_health_can_be_set_by_tests(aws: Any) -> None:
    aws.moto.control("POST", "config", {"healthyAfterSeconds": 0})
    aws.elb.register_targets(TargetGroupArn=aws.ip_tg, Targets=[{"Id": "10.0.1.10", "Port": 80},
                                                                 {"Id": "10.0.1.10", "Port": 81}])
    aws.moto.control("POST", "target-health", {"targetGroupArn": aws.ip_tg, "id": "10.0.1.10", "port": 80,
                                               "state": "unhealthy", "reason": "Target.FailedHealthChecks"})
    h = health(aws, aws.ip_tg)
    assert (h[("10.0.1.10", 80)]["State"], h[("10.0.1.10", 80)]["Reason"]) == ("unhealthy", "Target.FailedHealthChecks")
    assert h[("10.0.1.10", 80)]["Description"] == "Health checks failed"
    assert h[("10.0.1.10", 81)]["State"] == "healthy"
    # Explicit queries see it too; "auto" hands the target back to the timer.
    assert health(aws, aws.ip_tg, [{"Id": "10.0.1.10", "Port": 80}])[("10.0.1.10", 80)]["State"] == "unhealthy"
    aws.moto.control("POST", "target-health", {"targetGroupArn": aws.ip_tg, "id": "10.0.1.10", "port": 80,
                                               "state": "auto"})
    assert health(aws, aws.ip_tg)[("10.0.1.10", 80)]["State"] == "healthy"


def test_target_health_control_errors(aws: Any) -> None:
    with pytest.raises(urllib.error.HTTPError) as exc:
        aws.moto.control("POST", "target-health", {"targetGroupArn": aws.ip_tg + "x", "id": "10.0.1.10",
                                                   "port": 80, "state": "unhealthy"})
    assert exc.value.code == 404
    with pytest.raises(urllib.error.HTTPError) as exc:
        aws.moto.control("POST", "target-health", {"targetGroupArn": aws.ip_tg, "id": "10.0.1.10",
                                                   "port": 80, "state": "sick"})
    assert exc.value.code == 400


def test_deregistered_target_drains_for_the_delay_then_is_gone(aws: Any) -> None:
    aws.moto.control("POST", "config", {"healthyAfterSeconds": 0})
    aws.elb.modify_target_group_attributes(TargetGroupArn=aws.ip_tg, Attributes=[
        {"Key": "deregistration_delay.timeout_seconds", "Value": "1"}])
    aws.elb.register_targets(TargetGroupArn=aws.ip_tg, Targets=[{"Id": "10.0.1.10", "Port": 80},
                                                                 {"Id": "10.0.1.11", "Port": 80}])
    t0 = time.monotonic()
    aws.elb.deregister_targets(TargetGroupArn=aws.ip_tg, Targets=[{"Id": "10.0.1.10", "Port": 80}])
    h = health(aws, aws.ip_tg)
    assert (h[("10.0.1.10", 80)]["State"], h[("10.0.1.10", 80)]["Reason"]) == (
        "draining", "Target.DeregistrationInProgress")
    assert h[("10.0.1.11", 80)]["State"] == "healthy"
    assert wait_for(lambda: ("10.0.1.10", 80) not in health(aws, aws.ip_tg), 5)
    assert time.monotonic() - t0 >= 0.9
    h = health(aws, aws.ip_tg, [{"Id": "10.0.1.10", "Port": 80}])[("10.0.1.10", 80)]
    assert (h["State"], h["Reason"]) == ("unused", "Target.NotRegistered")


def test_default_deregistration_delay_is_300s_and_reregistration_ends_draining(aws: Any) -> None:
    aws.elb.register_targets(TargetGroupArn=aws.ip_tg, Targets=[{"Id": "10.0.1.10", "Port": 80}])
    aws.elb.deregister_targets(TargetGroupArn=aws.ip_tg, Targets=[{"Id": "10.0.1.10", "Port": 80}])
    time.sleep(0.7)  # longer than healthy-after: still draining
    assert health(aws, aws.ip_tg)[("10.0.1.10", 80)]["State"] == "draining"
    aws.elb.register_targets(TargetGroupArn=aws.ip_tg, Targets=[{"Id": "10.0.1.10", "Port": 80}])
    assert health(aws, aws.ip_tg)[("10.0.1.10", 80)]["State"] == "initial"
    assert wait_for(lambda: health(aws, aws.ip_tg)[("10.0.1.10", 80)]["State"] == "healthy", 5)


def test_zero_deregistration_delay_removes_at_once(aws: Any) -> None:
    aws.elb.modify_target_group_attributes(TargetGroupArn=aws.ip_tg, Attributes=[
        {"Key": "deregistration_delay.timeout_seconds", "Value": "0"}])
    aws.elb.register_targets(TargetGroupArn=aws.ip_tg, Targets=[{"Id": "10.0.1.10", "Port": 80}])
    aws.elb.deregister_targets(TargetGroupArn=aws.ip_tg, Targets=[{"Id": "10.0.1.10", "Port": 80}])
    assert health(aws, aws.ip_tg) == {}


def test_explicit_query_of_unregistered_target_is_unused(aws: Any) -> None:
    h = health(aws, aws.ip_tg, [{"Id": "10.0.1.99", "Port": 80}])[("10.0.1.99", 80)]
    assert (h["State"], h["Reason"]) == ("unused", "Target.NotRegistered")
    assert h["Description"] == "Target is not registered to the target group"


def test_deregistering_unknown_target_is_invalid_target(aws: Any) -> None:
    with pytest.raises(ClientError) as exc:
        aws.elb.deregister_targets(TargetGroupArn=aws.ip_tg, Targets=[{"Id": "10.0.1.10", "Port": 80}])
    assert error_of(exc)[0] == "InvalidTarget"


# --- target identity ---------------------------------------------------------------------------------


def test_two_ports_on_one_ip_are_two_targets(aws: Any) -> None:
    aws.elb.register_targets(TargetGroupArn=aws.ip_tg, Targets=[{"Id": "10.0.1.10", "Port": 8080},
                                                                 {"Id": "10.0.1.10", "Port": 8081}])
    aws.elb.register_targets(TargetGroupArn=aws.ip_tg, Targets=[{"Id": "10.0.1.10", "Port": 8082}])
    assert set(health(aws, aws.ip_tg)) == {("10.0.1.10", 8080), ("10.0.1.10", 8081), ("10.0.1.10", 8082)}
    # Deregistering one port (the delay 0 removes it at once) leaves the others.
    aws.elb.modify_target_group_attributes(TargetGroupArn=aws.ip_tg, Attributes=[
        {"Key": "deregistration_delay.timeout_seconds", "Value": "0"}])
    aws.elb.deregister_targets(TargetGroupArn=aws.ip_tg, Targets=[{"Id": "10.0.1.10", "Port": 8081}])
    assert set(health(aws, aws.ip_tg)) == {("10.0.1.10", 8080), ("10.0.1.10", 8082)}
    # A wrong port does not deregister anything.
    with pytest.raises(ClientError) as exc:
        aws.elb.deregister_targets(TargetGroupArn=aws.ip_tg, Targets=[{"Id": "10.0.1.10", "Port": 9999}])
    assert error_of(exc)[0] == "InvalidTarget"
    assert len(health(aws, aws.ip_tg)) == 2


def test_port_defaults_to_the_target_group_port(aws: Any) -> None:
    aws.elb.register_targets(TargetGroupArn=aws.ip_tg, Targets=[{"Id": "10.0.1.10"}])
    assert set(health(aws, aws.ip_tg)) == {("10.0.1.10", 80)}


def test_availability_zone_is_echoed(aws: Any) -> None:
    aws.elb.register_targets(TargetGroupArn=aws.ip_tg, Targets=[
        {"Id": "192.168.5.5", "Port": 80, "AvailabilityZone": "all"},
        {"Id": "10.0.2.7", "Port": 80, "AvailabilityZone": "us-east-1b"},
        {"Id": "10.0.1.7", "Port": 80}])
    h = health(aws, aws.ip_tg)
    assert h[("192.168.5.5", 80)]["Target"]["AvailabilityZone"] == "all"
    assert h[("10.0.2.7", 80)]["Target"]["AvailabilityZone"] == "us-east-1b"
    assert "AvailabilityZone" not in h[("10.0.1.7", 80)]["Target"]
    h = health(aws, aws.ip_tg, [{"Id": "192.168.5.5", "Port": 80}])
    assert h[("192.168.5.5", 80)]["Target"]["AvailabilityZone"] == "all"


# --- RegisterTargets validation ----------------------------------------------------------------------


def test_ip_outside_the_vpc_needs_availability_zone_all(aws: Any) -> None:
    with pytest.raises(ClientError) as exc:
        aws.elb.register_targets(TargetGroupArn=aws.ip_tg, Targets=[{"Id": "10.0.1.10", "Port": 80},
                                                                     {"Id": "192.168.5.5", "Port": 80}])
    code, message, status = error_of(exc)
    assert (code, status) == ("ValidationError", 400)
    assert "192.168.5.5" in message and "Availability Zone is required" in message
    assert health(aws, aws.ip_tg) == {}, "a rejected call registers nothing"
    with pytest.raises(ClientError) as exc:
        aws.elb.register_targets(TargetGroupArn=aws.ip_tg, Targets=[
            {"Id": "192.168.5.5", "Port": 80, "AvailabilityZone": "mars-1a"}])
    assert error_of(exc)[0] == "ValidationError"
    aws.elb.register_targets(TargetGroupArn=aws.ip_tg, Targets=[
        {"Id": "192.168.5.5", "Port": 80, "AvailabilityZone": "all"}])
    assert ("192.168.5.5", 80) in health(aws, aws.ip_tg)


def test_ip_inside_the_vpc_cannot_use_availability_zone_all(aws: Any) -> None:
    with pytest.raises(ClientError) as exc:
        aws.elb.register_targets(TargetGroupArn=aws.ip_tg, Targets=[
            {"Id": "10.0.1.10", "Port": 80, "AvailabilityZone": "all"}])
    code, message, _ = error_of(exc)
    assert code == "ValidationError" and "us-east-1a" in message


def test_secondary_vpc_cidr_counts_as_in_the_vpc(aws: Any) -> None:
    aws.ec2.associate_vpc_cidr_block(VpcId=aws.vpc, CidrBlock="100.64.0.0/16")
    aws.elb.register_targets(TargetGroupArn=aws.ip_tg, Targets=[{"Id": "100.64.3.3", "Port": 80}])
    aws.moto.control("POST", "config", {"vpcMembership": "subnet"})
    with pytest.raises(ClientError) as exc:
        aws.elb.register_targets(TargetGroupArn=aws.ip_tg, Targets=[{"Id": "100.64.3.4", "Port": 80}])
    assert error_of(exc)[0] == "ValidationError"


def test_ipv6_target_group_takes_ipv6_addresses_with_az_all_outside_the_vpc(aws: Any) -> None:
    vpc = aws.ec2.create_vpc(CidrBlock="10.9.0.0/16", AmazonProvidedIpv6CidrBlock=True)["Vpc"]
    v6 = vpc["Ipv6CidrBlockAssociationSet"][0]["Ipv6CidrBlock"]
    tg = aws.elb.create_target_group(Name="v6-tg", Protocol="HTTP", Port=80, VpcId=vpc["VpcId"], TargetType="ip",
                                     IpAddressType="ipv6")["TargetGroups"][0]
    assert tg["IpAddressType"] == "ipv6"
    described = aws.elb.describe_target_groups(TargetGroupArns=[tg["TargetGroupArn"]])["TargetGroups"][0]
    assert described["IpAddressType"] == "ipv6"
    inside = str(ipaddress.ip_network(v6).network_address + 0x10)
    arn = tg["TargetGroupArn"]
    for wrong in ("10.9.0.5", "not-an-ip"):
        with pytest.raises(ClientError) as exc:
            aws.elb.register_targets(TargetGroupArn=arn, Targets=[{"Id": wrong, "Port": 80}])
        assert error_of(exc)[0] == "ValidationError" and "IPv6" in error_of(exc)[1]
    with pytest.raises(ClientError) as exc:
        aws.elb.register_targets(TargetGroupArn=arn, Targets=[{"Id": "2001:db8::5", "Port": 80}])
    assert "Availability Zone is required" in error_of(exc)[1]
    aws.elb.register_targets(TargetGroupArn=arn, Targets=[{"Id": inside, "Port": 80},
                                                           {"Id": "2001:db8::5", "Port": 80, "AvailabilityZone": "all"}])
    assert set(health(aws, arn)) == {(inside, 80), ("2001:db8::5", 80)}


def test_network_interfaces_can_be_found_by_ipv6_address(aws: Any) -> None:
    vpc = aws.ec2.create_vpc(CidrBlock="10.8.0.0/16", AmazonProvidedIpv6CidrBlock=True)["Vpc"]
    v6 = ipaddress.ip_network(vpc["Ipv6CidrBlockAssociationSet"][0]["Ipv6CidrBlock"])
    subnet_v6 = next(v6.subnets(new_prefix=64))
    subnet = aws.ec2.create_subnet(VpcId=vpc["VpcId"], CidrBlock="10.8.1.0/24", Ipv6CidrBlock=str(subnet_v6),
                                   AvailabilityZone="us-east-1a")["Subnet"]["SubnetId"]
    pod = subnet_v6.network_address + 0xA
    eni = aws.ec2.create_network_interface(SubnetId=subnet, PrivateIpAddress="10.8.1.10",
                                           Ipv6Addresses=[{"Ipv6Address": str(pod)}])["NetworkInterface"]
    aws.ec2.create_network_interface(SubnetId=subnet, PrivateIpAddress="10.8.1.11")

    def found(value: str) -> list[str]:
        out = aws.ec2.describe_network_interfaces(Filters=[
            {"Name": "ipv6-addresses.ipv6-address", "Values": [value]},
            {"Name": "vpc-id", "Values": [vpc["VpcId"]]}])
        return [e["NetworkInterfaceId"] for e in out["NetworkInterfaces"]]

    assert found(str(pod)) == [eni["NetworkInterfaceId"]]
    assert found(str(pod + 1)) == []
    # The IPv4 filters are unchanged.
    out = aws.ec2.describe_network_interfaces(Filters=[{"Name": "addresses.private-ip-address", "Values": ["10.8.1.10"]}])
    assert [e["NetworkInterfaceId"] for e in out["NetworkInterfaces"]] == [eni["NetworkInterfaceId"]]


def test_instance_id_in_ip_target_group_is_rejected(aws: Any) -> None:
    with pytest.raises(ClientError) as exc:
        aws.elb.register_targets(TargetGroupArn=aws.ip_tg, Targets=[{"Id": "i-0123456789abcdef0", "Port": 80}])
    code, message, _ = error_of(exc)
    assert code == "ValidationError" and "not a valid IPv4 address" in message


def test_ip_in_instance_target_group_is_rejected(aws: Any) -> None:
    with pytest.raises(ClientError) as exc:
        aws.elb.register_targets(TargetGroupArn=aws.inst_tg, Targets=[{"Id": "10.0.1.10", "Port": 30080}])
    code, message, _ = error_of(exc)
    assert code == "ValidationError" and message == "Instance ID '10.0.1.10' is not valid"


def test_unknown_instance_is_rejected_and_running_instance_accepted(aws: Any) -> None:
    with pytest.raises(ClientError) as exc:
        aws.elb.register_targets(TargetGroupArn=aws.inst_tg, Targets=[{"Id": "i-0123456789abcdef0", "Port": 30080}])
    assert error_of(exc)[0] == "InvalidTarget"
    instance = aws.ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1, SubnetId=aws.subnet_a,
                                     InstanceType="t3.micro")["Instances"][0]["InstanceId"]
    aws.elb.register_targets(TargetGroupArn=aws.inst_tg, Targets=[{"Id": instance, "Port": 30080},
                                                                   {"Id": instance, "Port": 30081}])
    assert set(health(aws, aws.inst_tg)) == {(instance, 30080), (instance, 30081)}


def test_instance_in_another_vpc_is_rejected(aws: Any) -> None:
    other = aws.ec2.create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"]
    sub = aws.ec2.create_subnet(VpcId=other, CidrBlock="10.9.1.0/24", AvailabilityZone="us-east-1a")
    instance = aws.ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1,
                                     SubnetId=sub["Subnet"]["SubnetId"])["Instances"][0]["InstanceId"]
    with pytest.raises(ClientError) as exc:
        aws.elb.register_targets(TargetGroupArn=aws.inst_tg, Targets=[{"Id": instance, "Port": 30080}])
    assert error_of(exc)[0] == "InvalidTarget"


def test_target_quota_gives_too_many_targets(aws: Any) -> None:
    aws.moto.control("POST", "config", {"targetsPerGroupQuota": 3})
    aws.elb.register_targets(TargetGroupArn=aws.ip_tg, Targets=[{"Id": "10.0.1.10", "Port": p} for p in (1, 2)])
    with pytest.raises(ClientError) as exc:
        aws.elb.register_targets(TargetGroupArn=aws.ip_tg, Targets=[{"Id": "10.0.1.11", "Port": p} for p in (1, 2)])
    code, _, status = error_of(exc)
    assert (code, status) == ("TooManyTargets", 400)
    assert len(health(aws, aws.ip_tg)) == 2
    # Re-registering registered targets does not count twice.
    aws.elb.register_targets(TargetGroupArn=aws.ip_tg, Targets=[{"Id": "10.0.1.10", "Port": p} for p in (1, 2, 3)])
    assert len(health(aws, aws.ip_tg)) == 3


def test_default_quota_is_1000(aws: Any) -> None:
    aws.elb.register_targets(TargetGroupArn=aws.ip_tg, Targets=[
        {"Id": f"10.0.{1 + i // 250}.{i % 250 + 1}", "Port": 80} for i in range(1000)])
    with pytest.raises(ClientError) as exc:
        aws.elb.register_targets(TargetGroupArn=aws.ip_tg, Targets=[{"Id": "10.0.9.9", "Port": 80}])
    assert error_of(exc)[0] == "TooManyTargets"


def test_describe_target_groups_takes_at_most_20_arns(aws: Any) -> None:
    arns = [aws.elb.create_target_group(Name=f"many-{i}", Protocol="HTTP", Port=80, VpcId=aws.vpc,
                                        TargetType="ip")["TargetGroups"][0]["TargetGroupArn"] for i in range(21)]
    assert len(aws.elb.describe_target_groups(TargetGroupArns=arns[:20])["TargetGroups"]) == 20
    with pytest.raises(ClientError) as exc:
        aws.elb.describe_target_groups(TargetGroupArns=arns)
    code, message, status = error_of(exc)
    assert (code, status) == ("ValidationError", 400)
    assert message == "You cannot describe more than '20' target groups at a time"


# --- throttling and counters --------------------------------------------------------------------------


def test_a_rule_differing_only_in_description_is_a_duplicate(aws: Any) -> None:
    # EC2 identifies a rule by protocol, ports and peer; stock moto also compares a peer group's
    # description and would keep a second copy.
    sg = aws.ec2.create_security_group(GroupName="nodes", Description="d", VpcId=aws.vpc)["GroupId"]
    peer = aws.ec2.create_security_group(GroupName="lb", Description="d", VpcId=aws.vpc)["GroupId"]

    def authorize(description: str) -> None:
        aws.ec2.authorize_security_group_ingress(GroupId=sg, IpPermissions=[{
            "IpProtocol": "tcp", "FromPort": 80, "ToPort": 80,
            "UserIdGroupPairs": [{"GroupId": peer, "Description": description}]}])

    authorize("blue")
    with pytest.raises(ClientError) as exc:
        authorize("green")
    assert error_of(exc)[0] == "InvalidPermission.Duplicate"
    rules = aws.ec2.describe_security_group_rules(Filters=[{"Name": "group-id", "Values": [sg]}])
    assert len([r for r in rules["SecurityGroupRules"] if not r["IsEgress"]]) == 1


def test_elbv2_throttling_injection(aws: Any) -> None:
    aws.moto.control("POST", "throttle", {"operation": "RegisterTargets", "count": 2})
    for _ in range(2):
        with pytest.raises(ClientError) as exc:
            aws.elb.register_targets(TargetGroupArn=aws.ip_tg, Targets=[{"Id": "10.0.1.10", "Port": 80}])
        assert error_of(exc)[:1] == ("Throttling",)
        assert error_of(exc)[2] == 400
    assert aws.moto.control("GET", "throttle") == {"pending": []}
    aws.elb.register_targets(TargetGroupArn=aws.ip_tg, Targets=[{"Id": "10.0.1.10", "Port": 80}])
    assert len(health(aws, aws.ip_tg)) == 1
    calls = aws.moto.control("GET", "calls")["elbv2"]["RegisterTargets"]
    assert (calls["total"], calls["succeeded"], calls["failed"], calls["throttled"]) == (3, 1, 2, 2)
    assert calls["errors"] == {"Throttling": 2}


def test_random_faults_each_kind(aws: Any) -> None:
    # error-after: the registration takes effect, the answer is a 500 all the same.
    aws.moto.control("POST", "faults", {"rate": 1.0, "kinds": ["error-after"], "operations": ["RegisterTargets"]})
    with pytest.raises(ClientError) as exc:
        aws.elb.register_targets(TargetGroupArn=aws.ip_tg, Targets=[{"Id": "10.0.1.10", "Port": 80}])
    assert error_of(exc)[0] == "InternalFailure" and error_of(exc)[2] == 500
    assert ("10.0.1.10", 80) in health(aws, aws.ip_tg)
    # error-before: nothing happens.
    aws.moto.control("POST", "faults", {"rate": 1.0, "kinds": ["error-before"], "operations": ["RegisterTargets"]})
    with pytest.raises(ClientError):
        aws.elb.register_targets(TargetGroupArn=aws.ip_tg, Targets=[{"Id": "10.0.1.11", "Port": 80}])
    assert ("10.0.1.11", 80) not in health(aws, aws.ip_tg)
    # throttle, and slow answers that still succeed.
    aws.moto.control("POST", "faults", {"rate": 1.0, "kinds": ["throttle"], "operations": ["RegisterTargets"]})
    with pytest.raises(ClientError) as exc:
        aws.elb.register_targets(TargetGroupArn=aws.ip_tg, Targets=[{"Id": "10.0.1.11", "Port": 80}])
    assert error_of(exc)[0] == "Throttling"
    aws.moto.control("POST", "faults", {"rate": 1.0, "kinds": ["slow"], "slowSeconds": 0.3})
    start = time.monotonic()
    aws.elb.register_targets(TargetGroupArn=aws.ip_tg, Targets=[{"Id": "10.0.1.11", "Port": 80}])
    assert time.monotonic() - start >= 0.3
    snapshot = aws.moto.control("GET", "faults")
    assert snapshot["injected"] == {"slow": 1}, snapshot  # each configure starts the count again
    # Other services and operations outside the list are never touched; rate 0 turns it off.
    aws.moto.control("POST", "faults", {"rate": 1.0, "operations": ["DeregisterTargets"]})
    aws.elb.register_targets(TargetGroupArn=aws.ip_tg, Targets=[{"Id": "10.0.1.12", "Port": 80}])
    aws.ec2.describe_vpcs()
    aws.moto.control("POST", "faults", {"rate": 0})
    assert aws.moto.control("GET", "faults")["rate"] == 0


def test_random_faults_are_seeded_and_validated(aws: Any) -> None:
    def run() -> dict[str, int]:
        aws.moto.control("POST", "faults", {"rate": 0.5, "seed": 7, "operations": ["DescribeTargetGroups"],
                                             "kinds": ["throttle", "error-before"]})
        for _ in range(20):
            try:
                aws.elb.describe_target_groups()
            except ClientError:
                pass
        return aws.moto.control("GET", "faults")["injected"]

    first = run()
    assert 0 < sum(first.values()) < 20
    assert run() == first
    for bad in ({"rate": 2}, {"kinds": ["boom"]}, {"kinds": []}):
        with pytest.raises(urllib.error.HTTPError):
            aws.moto.control("POST", "faults", bad)


def test_sdk_retries_through_injected_throttling(aws: Any) -> None:
    elb = aws.moto.client("elbv2", retries=True)  # boto3 default: 3 attempts
    aws.moto.control("POST", "throttle", {"operation": "DescribeTargetGroups", "count": 2})
    assert elb.describe_target_groups(TargetGroupArns=[aws.ip_tg])["TargetGroups"]
    assert aws.moto.control("GET", "calls")["elbv2"]["DescribeTargetGroups"]["throttled"] == 2


def test_ec2_throttling_injection(aws: Any) -> None:
    aws.moto.control("POST", "throttle", {"operation": "DescribeSecurityGroups", "count": 1, "service": "ec2"})
    with pytest.raises(ClientError) as exc:
        aws.ec2.describe_security_groups()
    assert error_of(exc) == ("RequestLimitExceeded", "Request limit exceeded.", 503)
    aws.ec2.describe_security_groups()
    calls = aws.moto.control("GET", "calls")["ec2"]["DescribeSecurityGroups"]
    assert (calls["total"], calls["throttled"], calls["errors"]) == (2, 1, {"RequestLimitExceeded": 1})


def test_throttle_for_one_service_leaves_the_other_alone(aws: Any) -> None:
    aws.moto.control("POST", "throttle", {"operation": "DescribeTags", "count": 1, "service": "ec2"})
    aws.elb.describe_tags(ResourceArns=[aws.ip_tg])
    with pytest.raises(ClientError):
        aws.ec2.describe_tags()


def test_call_counters_and_reset(aws: Any) -> None:
    calls = aws.moto.control("GET", "calls")
    assert calls["ec2"]["CreateVpc"]["total"] == 1
    assert calls["ec2"]["CreateSubnet"]["total"] == 2
    assert calls["elbv2"]["CreateTargetGroup"] == {"total": 2, "succeeded": 2, "failed": 0, "throttled": 0,
                                                   "errors": {}}
    assert aws.moto.control("POST", "calls/reset") == {"status": "ok"}
    with pytest.raises(ClientError):
        aws.elb.describe_target_groups(TargetGroupArns=[aws.ip_tg + "0"])
    assert aws.moto.control("GET", "calls") == {"elbv2": {"DescribeTargetGroups": {
        "total": 1, "succeeded": 0, "failed": 1, "throttled": 0, "errors": {"TargetGroupNotFound": 1}}}}


def test_target_writes_are_logged_with_targets_time_and_status(aws: Any) -> None:
    aws.moto.control("POST", "calls/reset")
    before = time.time()
    aws.elb.register_targets(TargetGroupArn=aws.ip_tg, Targets=[{"Id": "10.0.1.20", "Port": 8080},
                                                                 {"Id": "10.0.1.21"}])
    aws.moto.control("POST", "throttle", {"operation": "DeregisterTargets", "count": 1})
    with pytest.raises(ClientError):
        aws.elb.deregister_targets(TargetGroupArn=aws.ip_tg, Targets=[{"Id": "10.0.1.20", "Port": 8080}])
    aws.elb.describe_target_health(TargetGroupArn=aws.ip_tg)  # reads are not logged
    log = aws.moto.control("GET", "calls/log")["targetWrites"]
    assert [(w["action"], w["status"], w["targetGroupArn"], w["targets"]) for w in log] == [
        ("RegisterTargets", 200, aws.ip_tg, [{"id": "10.0.1.20", "port": 8080}, {"id": "10.0.1.21", "port": None}]),
        ("DeregisterTargets", 400, aws.ip_tg, [{"id": "10.0.1.20", "port": 8080}]),
    ]
    assert before <= log[0]["time"] <= log[1]["time"] <= time.time()
    aws.moto.control("POST", "calls/reset")
    assert aws.moto.control("GET", "calls/log") == {"targetWrites": []}


def test_launcher_reset_restores_start_config(aws: Any) -> None:
    aws.moto.control("POST", "config", {"healthyAfterSeconds": 9, "targetsPerGroupQuota": 5})
    aws.moto.control("POST", "throttle", {"operation": "RegisterTargets", "count": 5})
    out = aws.moto.control("POST", "reset")
    assert out["config"]["healthyAfterSeconds"] == 0.5 and out["config"]["targetsPerGroupQuota"] == 1000
    assert aws.moto.control("GET", "throttle") == {"pending": []}
    assert aws.moto.control("GET", "calls") == {}
    assert aws.moto.control("GET", "calls/log") == {"targetWrites": []}
    with pytest.raises(urllib.error.HTTPError) as exc:
        aws.moto.control("POST", "config", {"noSuchKey": 1})
    assert exc.value.code == 400


def test_moto_api_still_works(aws: Any) -> None:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(urllib.request.Request(f"{aws.moto.url}/moto-api/reset", data=b"", method="POST")) as r:
        assert r.status == 200
    with pytest.raises(ClientError) as exc:
        aws.elb.describe_target_groups(TargetGroupArns=[aws.ip_tg])
    assert error_of(exc)[0] == "TargetGroupNotFound"
    with opener.open(f"{aws.moto.url}/moto-api/data.json") as r:
        assert r.status == 200


def test_sts_and_other_accounts_work(aws: Any) -> None:
    sts = aws.moto.client("sts")
    assert sts.get_caller_identity()["Account"] == "123456789012"
    creds = sts.assume_role(RoleArn="arn:aws:iam::222222222222:role/x", RoleSessionName="launcher-test")["Credentials"]
    import boto3

    elb2 = boto3.client("elbv2", endpoint_url=aws.moto.url, region_name="us-east-1",
                        aws_access_key_id=creds["AccessKeyId"], aws_secret_access_key=creds["SecretAccessKey"],
                        aws_session_token=creds["SessionToken"])
    assert elb2.describe_target_groups()["TargetGroups"] == []


# --- process lifecycle ----------------------------------------------------------------------------------


def test_sigterm_exits_cleanly(tmp_path: Path) -> None:
    m = start_launcher(tmp_path)
    t0 = time.monotonic()
    m.proc.send_signal(signal.SIGTERM)
    assert m.proc.wait(timeout=10) == 0
    assert time.monotonic() - t0 < 5
    assert m.url.startswith("http://127.0.0.1:")


def test_sandbox_start_stop(tmp_path: Path) -> None:
    """scripts/sandbox start/stop end to end (the script builds the control plane from tests/cluster with Go)."""
    if not shutil.which("go"):
        pytest.skip("go not installed: scripts/install-cluster cannot build the sandbox's Kubernetes")
    sandbox = tmp_path / "sb"
    pids: list[int] = []
    start = subprocess.run([str(REPO / "scripts" / "sandbox"), "start", str(sandbox)], capture_output=True,
                           text=True, timeout=1800)
    try:
        assert start.returncode == 0, f"sandbox start failed:\n{start.stdout}\n{start.stderr}"
        env_text = (sandbox / "env").read_text()
        for var in ("KUBECONFIG", "AWS_ENDPOINT_URL", "AWS_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                    "AWS_EC2_METADATA_DISABLED"):
            assert f"export {var}=" in env_text
        values = dict(line[len("export "):].split("=", 1) for line in env_text.splitlines()
                      if line.startswith("export "))
        values = {k: v.strip("'\"") for k, v in values.items()}
        # The kubectl of the sandbox's own Kubernetes release, first on the PATH DIR/env exports.
        kubectl = str(Path(values["PATH"].split("'")[0].split(":")[0]) / "kubectl")
        kube = subprocess.run([kubectl, "--kubeconfig", values["KUBECONFIG"], "get", "--raw", "/version"],
                              capture_output=True, text=True, timeout=30)
        assert kube.returncode == 0, kube.stderr
        if list((REPO / "crds").glob("*.yaml")):
            crds = subprocess.run([kubectl, "--kubeconfig", values["KUBECONFIG"], "get", "crd", "-o", "name"],
                                  capture_output=True, text=True, timeout=30)
            assert crds.returncode == 0 and crds.stdout.strip(), crds.stderr
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(f"{values['AWS_ENDPOINT_URL']}/_launcher/health", timeout=10) as r:
            assert r.status == 200
        import boto3

        ec2 = boto3.client("ec2", endpoint_url=values["AWS_ENDPOINT_URL"], region_name=values["AWS_REGION"],
                           aws_access_key_id=values["AWS_ACCESS_KEY_ID"],
                           aws_secret_access_key=values["AWS_SECRET_ACCESS_KEY"])
        assert ec2.describe_vpcs()["Vpcs"], "moto's default VPC"
        pids = [int(p) for p in (sandbox / "pids").read_text().split()]
        assert len(pids) >= 2
    finally:
        stop = subprocess.run([str(REPO / "scripts" / "sandbox"), "stop", str(sandbox)], capture_output=True,
                              text=True, timeout=60)
    assert stop.returncode == 0, stop.stderr
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
    again = subprocess.run([str(REPO / "scripts" / "sandbox"), "stop", str(sandbox)], capture_output=True,
                           text=True, timeout=60)
    assert again.returncode == 0, "stop is idempotent"
