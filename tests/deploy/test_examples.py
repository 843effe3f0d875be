"""The example manifests: the shapes the local demo relies on, valid core objects, and (once the
CRD exists) TargetGroupBindings that fit its schema."""

import pathlib

import jsonschema
import kubernetes_validate
import pytest
import yaml

REPO = pathlib.Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
CRD = REPO / "crds" / "targetgroupbindings.elbv2.k8s.aws.yaml"
YAMLS = sorted(p for p in EXAMPLES.glob("*/*.yaml"))


def load(path):
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert len(docs) == 1, path
    return docs[0]


def test_ip_mode_matches_the_demo():
    d = EXAMPLES / "ip-mode"
    assert load(d / "namespace.yaml") == {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "demo"}}
    svc = load(d / "service.yaml")
    assert svc["metadata"] == {"name": "web", "namespace": "demo"}
    assert svc["spec"]["type"] == "ClusterIP" and svc["spec"]["selector"] == {"app": "web"}
    assert svc["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]
    tgb = load(d / "targetgroupbinding.yaml")
    assert tgb == {
        "apiVersion": "elbv2.k8s.aws/v1beta1",
        "kind": "TargetGroupBinding",
        "metadata": {"name": "web", "namespace": "demo"},
        "spec": {"serviceRef": {"name": "web", "port": 80}, "targetGroupName": "demo-web-ip", "targetType": "ip"},
    }
    # The demo's rolling update holds healthy targets only because the pods wait for this gate.
    pod = load(d / "deployment.yaml")["spec"]["template"]
    assert pod["metadata"]["labels"] == {"app": "web"}
    assert pod["spec"]["readinessGates"] == [{"conditionType": "target-health.elbv2.k8s.aws/web"}]


def test_instance_mode_matches_the_demo():
    d = EXAMPLES / "instance-mode"
    svc = load(d / "service.yaml")
    assert svc["metadata"]["name"] == "web-nodeport" and svc["spec"]["type"] == "NodePort"
    (port,) = svc["spec"]["ports"]
    tgb = load(d / "targetgroupbinding.yaml")
    assert tgb["metadata"] == {"name": "web-instance", "namespace": "demo"}
    spec = tgb["spec"]
    assert spec["targetGroupName"] == "demo-web-instance" and spec["targetType"] == "instance"
    assert spec["serviceRef"] == {"name": "web-nodeport", "port": port["port"]}
    (rule,) = spec["networking"]["ingress"]
    assert "securityGroup" in rule["from"][0]
    assert rule["ports"] == [{"protocol": "TCP", "port": port["nodePort"]}]


def test_blue_green_binding_is_multi_cluster():
    tgb = load(EXAMPLES / "blue-green" / "targetgroupbinding.yaml")
    assert tgb["spec"]["multiClusterTargetGroup"] is True


def test_target_group_names_match_terraform():
    """The static bindings name the target groups the examples' Terraform creates (<name>-<key>)."""
    import hcl2

    for example in ("ip-mode", "instance-mode", "blue-green"):
        with (EXAMPLES / example / "main.tf").open() as f:
            (call,) = [b for block in hcl2.load(f)["module"] for b in block.values()]
        prefix = call["name"].strip('"')
        names = {f"{prefix}-{key}" for key in call["target_groups"]}
        tgb = load(EXAMPLES / example / "targetgroupbinding.yaml")
        assert tgb["spec"]["targetGroupName"] in names, (example, names)


@pytest.mark.parametrize("path", YAMLS, ids=[str(p.relative_to(EXAMPLES)) for p in YAMLS])
def test_core_objects_validate(path):
    doc = load(path)
    if doc["apiVersion"].startswith("elbv2.k8s.aws/"):
        pytest.skip("custom resource: see test_bindings_fit_the_crd")
    if doc["kind"] == "Kustomization":
        pytest.skip("rendered in tests/deploy/test_kustomize.py")
    kubernetes_validate.validate(doc, "1.37.0", strict=True)


@pytest.mark.parametrize("path", [p for p in YAMLS if p.name == "targetgroupbinding.yaml"], ids=lambda p: p.parent.name)
def test_bindings_fit_the_crd(path):
    if not CRD.exists():
        pytest.skip("crds/ has no CRD yet")
    crd = yaml.safe_load(CRD.read_text())
    doc = load(path)
    version = doc["apiVersion"].split("/")[1]
    (v,) = [v for v in crd["spec"]["versions"] if v["name"] == version]
    jsonschema.validate(doc["spec"], v["schema"]["openAPIV3Schema"]["properties"]["spec"])
