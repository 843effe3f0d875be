"""Fixtures: each test gets its own patched moto (tests/aws/moto_launcher.py) on a free loopback port."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import boto3
import pytest
from botocore.config import Config

HERE = Path(__file__).resolve().parent
LAUNCHER = HERE / "moto_launcher.py"
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class Moto:
    """A running launcher: its URL, boto3 clients and the /_launcher control API."""

    def __init__(self, url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.url = url
        self.proc = proc
        self.log = log

    def client(self, service: str, retries: bool = False) -> Any:
        # Retries off by default, so injected errors surface on the first call. Note: botocore's
        # "max_attempts" counts retries (max_attempts=1 means 2 calls); "total_max_attempts" counts calls.
        cfg = Config(retries={"total_max_attempts": 1, "mode": "standard"}) if not retries else None
        return boto3.client(service, endpoint_url=self.url, region_name="us-east-1",
                            aws_access_key_id="testing", aws_secret_access_key="testing", config=cfg)

    def control(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else (b"" if method == "POST" else None)
        req = urllib.request.Request(f"{self.url}/_launcher/{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with _NO_PROXY.open(req, timeout=10) as resp:
            return json.loads(resp.read())


def start_launcher(tmp_path: Path, *extra: str) -> Moto:
    ready = tmp_path / "moto.url"
    log = tmp_path / "moto.log"
    env = dict(os.environ)
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        env.pop(var, None)
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, str(LAUNCHER), "--host", "127.0.0.1", "--port", "0",
                                 "--ready-file", str(ready), "--quiet", *extra],
                                stdout=out, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 60
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"moto launcher did not become ready:\n{log.read_text()[-3000:]}")
        time.sleep(0.05)
    return Moto(ready.read_text().strip(), proc, log)


def stop_launcher(moto: Moto) -> None:
    if moto.proc.poll() is None:
        moto.proc.send_signal(signal.SIGTERM)
        try:
            moto.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            moto.proc.kill()
            moto.proc.wait()


@pytest.fixture
def moto(tmp_path: Path) -> Iterator[Moto]:
    m = start_launcher(tmp_path, "--healthy-after", "0.5")
    try:
        yield m
    finally:
        stop_launcher(m)


@pytest.fixture
def aws(moto: Moto) -> Any:
    """A VPC 10.0.0.0/16 with subnets in us-east-1a/b, an ip TG and an instance TG on port 80."""
    ec2 = moto.client("ec2")
    elb = moto.client("elbv2")
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    sub_a = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24", AvailabilityZone="us-east-1a")["Subnet"]["SubnetId"]
    sub_b = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.2.0/24", AvailabilityZone="us-east-1b")["Subnet"]["SubnetId"]
    ip_tg = elb.create_target_group(Name="ip-tg", Protocol="HTTP", Port=80, VpcId=vpc,
                                    TargetType="ip")["TargetGroups"][0]["TargetGroupArn"]
    inst_tg = elb.create_target_group(Name="inst-tg", Protocol="HTTP", Port=80, VpcId=vpc,
                                      TargetType="instance")["TargetGroups"][0]["TargetGroupArn"]

    class Env:
        pass

    env = Env()
    env.moto, env.ec2, env.elb = moto, ec2, elb
    env.vpc, env.subnet_a, env.subnet_b = vpc, sub_a, sub_b
    env.ip_tg, env.inst_tg = ip_tg, inst_tg
    return env
