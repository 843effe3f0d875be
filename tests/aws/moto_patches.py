"""Patches that make moto's ELBv2 target handling behave like AWS where tgb-agent depends on it.

THIS IS THE ONLY FILE THAT TOUCHES MOTO INTERNALS. It replaces a few methods of
``moto.elbv2.models.FakeTargetGroup`` and ``moto.elbv2.models.ELBv2Backend`` and reads
EC2 models (VPCs, subnets, instances, zones). Those are private APIs, so the moto version is
pinned (``MOTO_VERSION``) and ``apply()`` refuses to run against any other version: when moto
is upgraded, re-read the replaced methods in ``moto/elbv2/models.py`` and re-run
``tests/aws/test_launcher.py``.

What changes (stock moto 5.2.5 behaviour in brackets):
- targets are keyed by Id+Port, also within one call [Id only: two ports on one IP collapse];
- AvailabilityZone is stored and echoed in DescribeTargetHealth [dropped];
- a new target is ``initial`` / ``Elb.RegistrationInProgress`` for ``healthy_after_seconds``,
  then ``healthy`` (or the state a test set for it) [``healthy`` at once, forever];
- DeregisterTargets moves the target to ``draining`` / ``Target.DeregistrationInProgress`` for the
  TG's ``deregistration_delay.timeout_seconds``, then it is gone; registering it again while it
  drains makes it registered (``initial``) again [gone at once];
- DescribeTargetHealth without targets lists registered plus still-draining targets; an explicitly
  queried unregistered target is ``unused`` / ``Target.NotRegistered`` [``unavailable``];
- RegisterTargets validates like AWS (all targets first, nothing applied on error):
  ip TG: Id must be an IP of the TG's family, an IP outside the TG's VPC needs an
  AvailabilityZone (``all`` or a zone of the region), an IP inside it must not use ``all``;
  instance TG: Id must look like an instance id, the instance must exist in the TG's VPC and run;
  Port 1..65535; the per-TG quota -> ``TooManyTargets`` [almost nothing validated];
- DescribeTargetGroups refuses more than 20 ARNs in one call with ``ValidationError`` "You cannot
  describe more than '20' target groups at a time" [any number];
- DescribeNetworkInterfaces takes the filter ``ipv6-addresses.ipv6-address`` (the ENIs holding an
  IPv6 pod address) [not implemented: the call fails with ``FilterNotImplementedError``].

Error codes/messages follow what AWS returns (messages as quoted in public bug reports where
the API reference gives none; see tests/aws/README.md).
"""

from __future__ import annotations

import ipaddress
import re
import threading
import time
from dataclasses import dataclass
from typing import Any

MOTO_VERSION = "5.2.5"

# AWS wording. ValidationError messages are taken from real AWS responses quoted in public issues;
# InvalidTarget / TooManyTargets from the ELBv2 API reference (RegisterTargets "Errors").
MSG_AZ_REQUIRED = "The Availability Zone is required for IP address '{ip}' because it is not in the VPC"
MSG_AZ_INVALID = (
    "You must specify a valid Availability Zone or select 'all' for all enabled Availability zones, "
    "since the IP address '{ip}' is outside the VPC"
)
MSG_AZ_ALL_IN_VPC = (
    "The IP address '{ip}' is within the VPC, and cannot have its Availability Zone overridden to 'all' from '{az}'"
)
MSG_NOT_AN_IP = "The IP address '{id}' is not a valid {family} address"
MSG_NOT_AN_INSTANCE = "Instance ID '{id}' is not valid"
MSG_INVALID_TARGET = (
    "The specified target does not exist, is not in the same VPC as the target group, "
    "or has an unsupported instance type."
)
MSG_TOO_MANY_TARGETS = "You've reached the limit on the number of targets."
MSG_PORT_RANGE = (
    "1 validation error detected: Value '{port}' at 'targets.{n}.member.port' failed to satisfy "
    "constraint: Member must have value {rel} {bound}"
)

# Default descriptions AWS pairs with each reason code.
REASON_DESCRIPTIONS = {
    "Elb.RegistrationInProgress": "Target registration is in progress",
    "Elb.InitialHealthChecking": "Initial health checks in progress",
    "Elb.InternalError": "Health checks failed due to an internal error",
    "Target.ResponseCodeMismatch": "Health checks failed with these codes: [502]",
    "Target.Timeout": "Request timed out",
    "Target.FailedHealthChecks": "Health checks failed",
    "Target.NotRegistered": "Target is not registered to the target group",
    "Target.NotInUse": "Target group is not configured to receive traffic from the load balancer",
    "Target.DeregistrationInProgress": "Target deregistration is in progress",
    "Target.InvalidState": "Target is in the stopped state",
    "Target.IpUnusable": "The target IP address is reserved for use by a load balancer",
    "Target.HealthCheckDisabled": "Health checks are disabled",
}

VALID_STATES = {"initial", "healthy", "unhealthy", "unhealthy.draining", "unused", "draining", "unavailable"}
INSTANCE_ID = re.compile(r"^i-(?:[0-9a-f]{8}|[0-9a-f]{17})$")


@dataclass
class Config:
    healthy_after_seconds: float = 2.0
    targets_per_group_quota: int = 1000
    # "cidr": an IP is "in the VPC" when it is inside one of the VPC's associated CIDR blocks
    # (what the brief and LBC assume). "subnet": only when inside one of the VPC's subnets
    # (what AWS seems to check, kubernetes-sigs/aws-load-balancer-controller#3714).
    vpc_membership: str = "cidr"

    def to_json(self) -> dict[str, Any]:
        return {
            "healthyAfterSeconds": self.healthy_after_seconds,
            "targetsPerGroupQuota": self.targets_per_group_quota,
            "vpcMembership": self.vpc_membership,
        }

    def update(self, body: dict[str, Any]) -> None:
        """Apply a JSON body of the control API; raises ValueError on bad input (nothing changed)."""
        new = Config(self.healthy_after_seconds, self.targets_per_group_quota, self.vpc_membership)
        for key, value in body.items():
            if key == "healthyAfterSeconds":
                new.healthy_after_seconds = float(value)
                if new.healthy_after_seconds < 0:
                    raise ValueError("healthyAfterSeconds must be >= 0")
            elif key == "targetsPerGroupQuota":
                new.targets_per_group_quota = int(value)
                if new.targets_per_group_quota < 0:
                    raise ValueError("targetsPerGroupQuota must be >= 0")
            elif key == "vpcMembership":
                if value not in ("cidr", "subnet"):
                    raise ValueError("vpcMembership must be 'cidr' or 'subnet'")
                new.vpc_membership = value
            else:
                raise ValueError(f"unknown config key {key!r}")
        self.__dict__.update(new.__dict__)


CONFIG = Config()
# moto is not thread-safe and Werkzeug serves each request on its own thread: all target
# mutations and reads of a target group happen under this lock.
LOCK = threading.RLock()
_applied = False


def _now() -> float:
    return time.monotonic()


def _key(target_id: str, port: Any) -> str:
    return f"{target_id}:{int(port)}"


def _port_of(tg: Any, target: dict[str, Any]) -> int:
    port = target.get("Port")
    if port in (None, ""):
        port = tg.port
    return int(port)


def _state(tg: Any) -> None:
    """Create the launcher's per-TG bookkeeping on first use (moto's reset drops it with the TG)."""
    if not hasattr(tg, "draining_targets"):
        tg.draining_targets = {}  # key -> {"Id", "Port", ["AvailabilityZone"], "until"}
        tg.health_overrides = {}  # key -> {"State", "Reason", "Description"}
        tg._registered_at = {}  # key -> monotonic time of (re-)registration


def _expire_draining(tg: Any) -> None:
    now = _now()
    for key in [k for k, t in tg.draining_targets.items() if t["until"] <= now]:
        del tg.draining_targets[key]


def _deregistration_delay(tg: Any) -> float:
    try:
        return float(tg.attributes.get("deregistration_delay.timeout_seconds", 300))
    except (TypeError, ValueError):
        return 300.0


def _vpc_networks(tg: Any) -> list[tuple[Any, str | None]] | None:
    """(network, az) pairs that make an IP 'in the VPC'; None when the TG's VPC is unknown to moto."""
    ec2 = tg.ec2_backend
    vpc = ec2.vpcs.get(tg.vpc_id)
    if vpc is None:
        return None
    subnets = []
    for per_zone in ec2.subnets.values():
        for subnet in per_zone.values():
            if subnet.vpc_id == tg.vpc_id:
                for cidr in filter(None, [subnet.cidr_block, getattr(subnet, "ipv6_cidr_block", None)]):
                    subnets.append((ipaddress.ip_network(cidr, strict=False), subnet.availability_zone))
    if CONFIG.vpc_membership == "subnet":
        return subnets
    nets: list[tuple[Any, str | None]] = []
    for assoc in vpc._cidr_block_association_set.values():
        state = (assoc.get("cidr_block_state") or {}).get("state", "associated")
        if state in ("associated", "associating"):
            nets.append((ipaddress.ip_network(assoc["cidr_block"], strict=False), None))
    # Subnets first so that an in-VPC IP finds the zone of its subnet.
    return subnets + nets


def _zone_names(tg: Any) -> set[str]:
    try:
        return {z.name for z in tg.ec2_backend.describe_availability_zones()}
    except Exception:  # pragma: no cover - moto internals differ
        return set()


def _validate(tg: Any, targets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Validate a RegisterTargets request like AWS; return normalised targets (Id, Port, [AZ])."""
    from moto.elbv2.exceptions import ELBClientError, InvalidTargetError, TargetNotRunning

    out: list[dict[str, Any]] = []
    # None: the TG's VPC is unknown to moto (TG created with a made-up VpcId): no VPC checks.
    networks = _vpc_networks(tg) if tg.target_type == "ip" else None
    for n, target in enumerate(targets, start=1):
        target_id = str(target.get("Id", ""))
        port = _port_of(tg, target)
        if port < 1 or port > 65535:
            rel, bound = ("greater than or equal to", 1) if port < 1 else ("less than or equal to", 65535)
            raise ELBClientError("ValidationError", MSG_PORT_RANGE.format(port=port, n=n, rel=rel, bound=bound))
        az = target.get("AvailabilityZone") or None
        if tg.target_type == "ip":
            family = "IPv6" if tg.ip_address_type == "ipv6" else "IPv4"
            try:
                ip = ipaddress.ip_address(target_id)
            except ValueError:
                ip = None
            if ip is None or (ip.version == 6) != (family == "IPv6"):
                raise ELBClientError("ValidationError", MSG_NOT_AN_IP.format(id=target_id, family=family))
            if networks is not None:
                hit = [(net, zone) for net, zone in networks if ip in net]
                if hit:
                    if az == "all":
                        zone = next((zone for _, zone in hit if zone), None)
                        if zone:
                            raise ELBClientError("ValidationError", MSG_AZ_ALL_IN_VPC.format(ip=target_id, az=zone))
                elif az is None:
                    raise ELBClientError("ValidationError", MSG_AZ_REQUIRED.format(ip=target_id))
                elif az != "all" and az not in _zone_names(tg):
                    raise ELBClientError("ValidationError", MSG_AZ_INVALID.format(ip=target_id))
        elif tg.target_type == "instance":
            if not INSTANCE_ID.match(target_id):
                raise ELBClientError("ValidationError", MSG_NOT_AN_INSTANCE.format(id=target_id))
            instance = tg.ec2_backend.get_instance_by_id(target_id)
            if instance is None or instance.state == "terminated":
                raise InvalidTargetError()
            if tg.vpc_id and getattr(instance, "vpc_id", None) and instance.vpc_id != tg.vpc_id:
                raise InvalidTargetError()
            if instance.state != "running":
                raise TargetNotRunning(instance_id=target_id)
        entry = {"Id": target_id, "Port": port}
        if az:
            entry["AvailabilityZone"] = az
        out.append(entry)
    return out


class _HealthStatus:
    """Stands in for moto's FakeHealthStatus, adding AvailabilityZone to the echoed target."""

    def __init__(self, tg: Any, target: dict[str, Any], state: str, reason: str | None, description: str | None):
        self.instance_id = target["Id"]
        self.port = target["Port"]
        self.health_check_port = tg.health_check_port
        self.status = state
        self.reason = reason
        self.description = description if description is not None else REASON_DESCRIPTIONS.get(reason or "")
        self._az = target.get("AvailabilityZone")

    @property
    def target(self) -> dict[str, Any]:
        out = {"Id": self.instance_id, "Port": self.port}
        if self._az:
            out["AvailabilityZone"] = self._az
        return out

    @property
    def target_health(self) -> dict[str, Any]:
        return {"State": self.status, "Reason": self.reason, "Description": self.description}


# --- replacements for FakeTargetGroup methods ---------------------------------------------------


def _register(self: Any, targets: list[dict[str, Any]]) -> None:
    from moto.elbv2.exceptions import ELBClientError

    with LOCK:
        _state(self)
        _expire_draining(self)
        new = _validate(self, targets)
        keys = {_key(t["Id"], t["Port"]) for t in new}
        total = len(set(self.targets) | keys)
        if total > CONFIG.targets_per_group_quota:
            raise ELBClientError("TooManyTargets", MSG_TOO_MANY_TARGETS)
        now = _now()
        for t in new:
            key = _key(t["Id"], t["Port"])
            if key in self.targets:
                # Registering a registered target again is a no-op in AWS (health unchanged);
                # only a newly given AZ is kept.
                if "AvailabilityZone" in t:
                    self.targets[key]["AvailabilityZone"] = t["AvailabilityZone"]
                continue
            self.draining_targets.pop(key, None)
            self.deregistered_targets.pop(key, None)
            self.targets[key] = dict(t)
            self._registered_at[key] = now


def _drain(self: Any, key: str) -> None:
    t = self.targets.pop(key)
    self._registered_at.pop(key, None)
    self.deregistered_targets[key] = t
    delay = _deregistration_delay(self)
    if delay > 0:
        self.draining_targets[key] = dict(t, until=_now() + delay)


def _deregister(self: Any, targets: list[dict[str, Any]]) -> None:
    from moto.elbv2.exceptions import InvalidTargetError

    with LOCK:
        _state(self)
        _expire_draining(self)
        keys = []
        for target in targets:
            key = _key(str(target["Id"]), _port_of(self, target))
            if key not in self.targets and key not in self.draining_targets:
                raise InvalidTargetError()  # moto's (and, we believe, AWS's) answer; nothing applied
            keys.append(key)
        for key in keys:
            if key in self.targets:
                _drain(self, key)


def _deregister_terminated_instances(self: Any, instance_ids: list[str]) -> None:
    with LOCK:
        _state(self)
        for key in [k for k, t in self.targets.items() if t["Id"] in instance_ids]:
            self.terminated_targets[key] = self.targets[key]
            _drain(self, key)


def _health_for(self: Any, target: dict[str, Any], ec2_backend: Any) -> _HealthStatus:
    with LOCK:
        _state(self)
        _expire_draining(self)
        key = _key(str(target["Id"]), _port_of(self, target))
        t = self.targets.get(key)
        if t is None:
            d = self.draining_targets.get(key)
            if d is not None:
                return _HealthStatus(self, d, "draining", "Target.DeregistrationInProgress", None)
            probe = {"Id": str(target["Id"]), "Port": _port_of(self, target)}
            return _HealthStatus(self, probe, "unused", "Target.NotRegistered", None)
        if self.target_type == "instance":
            instance = ec2_backend.get_instance_by_id(t["Id"])
            if instance is not None and instance.state == "stopped":
                return _HealthStatus(self, t, "unused", "Target.InvalidState", None)
        if not self.health_check_enabled:
            return _HealthStatus(self, t, "unavailable", "Target.HealthCheckDisabled", None)
        if _now() < self._registered_at.get(key, 0.0) + CONFIG.healthy_after_seconds:
            return _HealthStatus(self, t, "initial", "Elb.RegistrationInProgress", None)
        override = self.health_overrides.get(key)
        if override is not None:
            return _HealthStatus(self, t, override["State"], override["Reason"], override["Description"])
        return _HealthStatus(self, t, "healthy", None, None)


# --- replacement for ELBv2Backend.describe_target_health ----------------------------------------


def _describe_target_health(self: Any, target_group_arn: str, targets: list[dict[str, Any]]) -> list[Any]:
    from moto.elbv2.exceptions import TargetGroupNotFoundError

    tg = self.target_groups.get(target_group_arn)
    if tg is None:
        raise TargetGroupNotFoundError()
    with LOCK:
        _state(tg)
        _expire_draining(tg)
        if not targets:
            targets = list(tg.targets.values()) + list(tg.draining_targets.values())
        return [tg.health_for(t, self.ec2_backend) for t in targets]


# --- helpers for the launcher's control API -----------------------------------------------------


def find_target_group(arn: str) -> Any | None:
    """Look a TG up by ARN in the account and region the ARN names."""
    from moto.elbv2.models import elbv2_backends

    parts = arn.split(":")
    if len(parts) < 6:
        return None
    region, account = parts[3], parts[4]
    try:
        return elbv2_backends[account][region].target_groups.get(arn)
    except KeyError:
        return None


def set_target_health(arn: str, target_id: str, port: Any, state: str | None, reason: str | None,
                      description: str | None) -> dict[str, Any]:
    """Force the health a target reports once it is past `initial` (state None/'auto' clears it).

    Raises LookupError when the TG does not exist and ValueError for a bad state.
    """
    tg = find_target_group(arn)
    if tg is None:
        raise LookupError(f"target group not found: {arn}")
    with LOCK:
        _state(tg)
        key = _key(target_id, port if port not in (None, "") else tg.port)
        if state in (None, "", "auto"):
            tg.health_overrides.pop(key, None)
            return {"key": key, "override": None}
        if state not in VALID_STATES:
            raise ValueError(f"state must be one of {sorted(VALID_STATES)} or 'auto'")
        override = {"State": state, "Reason": reason or None, "Description": description}
        if override["Description"] is None:
            override["Description"] = REASON_DESCRIPTIONS.get(reason or "")
        tg.health_overrides[key] = override
        return {"key": key, "override": override}


def _rule_identity(rule: Any) -> tuple[Any, ...]:
    """What EC2 tells security-group rules apart by: protocol, ports, and one peer. Not the
    description: EC2 refuses a second rule that differs only there (InvalidPermission.Duplicate)."""
    peer_group = rule.source_group.get("GroupId") if isinstance(rule.source_group, dict) else rule.source_group
    ports = None if rule.ip_protocol == "-1" else (rule.from_port, rule.to_port)
    return (rule.ip_protocol, ports, rule.ip_range.get("CidrIp"), rule.ip_range.get("CidrIpv6"), peer_group,
            rule.prefix_list_id)


def _same_rule(self: Any, other: Any) -> bool:
    return _rule_identity(self) == _rule_identity(other)


def _eni_filter_value(original: Any) -> Any:
    """NetworkInterface.get_filter_value, plus the IPv6-address filter AWS has (addresses compared
    in canonical form, as the agent sends them)."""

    def get_filter_value(self: Any, filter_name: str, method_name: str | None = None) -> Any:
        if filter_name == "ipv6-addresses.ipv6-address":
            return [str(ipaddress.ip_address(ip)) for ip in self.ipv6_addresses if ip]
        return original(self, filter_name, method_name)

    return get_filter_value


MAX_DESCRIBED_ARNS = 20


def _describe_target_groups_at_most_20(original: Any) -> Any:
    def describe_target_groups(self: Any, load_balancer_arn: Any, target_group_arns: list[str], names: Any) -> Any:
        from moto.elbv2.exceptions import ValidationError

        if len(target_group_arns or []) > MAX_DESCRIBED_ARNS:
            raise ValidationError(f"You cannot describe more than '{MAX_DESCRIBED_ARNS}' target groups at a time")
        return original(self, load_balancer_arn, target_group_arns, names)

    return describe_target_groups


def apply() -> None:
    """Install the patches (idempotent). Fails loudly on any moto version but the pinned one."""
    global _applied
    import moto

    if moto.__version__ != MOTO_VERSION:
        raise SystemExit(
            f"moto_patches: moto {moto.__version__} is installed but these patches are written for "
            f"moto {MOTO_VERSION}; run scripts/install-moto"
        )
    if _applied:
        return
    from moto.elbv2 import models

    for name in ("register", "deregister", "deregister_terminated_instances", "health_for"):
        assert hasattr(models.FakeTargetGroup, name), f"moto changed: FakeTargetGroup.{name} is gone"
    assert hasattr(models.ELBv2Backend, "describe_target_health")
    assert hasattr(models.ELBv2Backend, "describe_target_groups")
    models.FakeTargetGroup.register = _register
    models.FakeTargetGroup.deregister = _deregister
    models.FakeTargetGroup.deregister_terminated_instances = _deregister_terminated_instances
    models.FakeTargetGroup.health_for = _health_for
    models.ELBv2Backend.describe_target_health = _describe_target_health
    models.ELBv2Backend.describe_target_groups = _describe_target_groups_at_most_20(
        models.ELBv2Backend.describe_target_groups)
    from moto.ec2.models import security_groups

    assert hasattr(security_groups, "SecurityGroupRule"), "moto changed: SecurityGroupRule is gone"
    security_groups.SecurityGroupRule.__eq__ = _same_rule
    from moto.ec2.models import elastic_network_interfaces as enis

    assert hasattr(enis.NetworkInterface, "get_filter_value"), "moto changed: NetworkInterface.get_filter_value"
    enis.NetworkInterface.get_filter_value = _eni_filter_value(enis.NetworkInterface.get_filter_value)
    _applied = True
