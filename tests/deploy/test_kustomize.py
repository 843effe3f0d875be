"""deploy/ renders with kustomize, validates against the Kubernetes schemas, and grants exactly
what the agent needs, no more."""

import pathlib
import shutil
import subprocess

import kubernetes_validate
import pytest
import yaml

REPO = pathlib.Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
NS = "tgb-system"
# Oldest and newest Kubernetes minor versions whose schemas kubernetes-validate ships and we support.
K8S_VERSIONS = ["1.29.0", "1.37.0"]
OVERLAYS = [REPO / "examples" / "blue-green" / "agent" / c for c in ("blue", "green")]


def kustomize(path: pathlib.Path) -> list[dict]:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is needed for `kubectl kustomize`"
    proc = subprocess.run([kubectl, "kustomize", str(path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


@pytest.fixture(scope="module")
def rendered() -> list[dict]:
    return kustomize(DEPLOY)


def by_kind(docs, kind):
    return [d for d in docs if d["kind"] == kind]


def one(docs, kind):
    found = by_kind(docs, kind)
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def test_renders_the_expected_objects(rendered):
    got = sorted((d["kind"], d["metadata"]["name"].rsplit("-", 1)[0] if d["kind"] == "ConfigMap" else d["metadata"]["name"]) for d in rendered)
    assert got == sorted([
        ("ClusterRole", "tgb-agent"),
        ("ClusterRoleBinding", "tgb-agent"),
        ("ConfigMap", "tgb-agent-settings"),
        ("CustomResourceDefinition", "targetgroupbindings.elbv2.k8s.aws"),
        ("Deployment", "tgb-agent"),
        ("Namespace", NS),
        ("PodDisruptionBudget", "tgb-agent"),
        ("Role", "tgb-agent"),
        ("RoleBinding", "tgb-agent"),
        ("ServiceAccount", "tgb-agent"),
        ("Service", "tgb-agent-webhook"),
        ("MutatingWebhookConfiguration", "tgb-agent-webhook"),
    ])
    cluster_scoped = {"ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "Namespace",
                      "MutatingWebhookConfiguration"}
    for d in rendered:
        if d["kind"] not in cluster_scoped:
            assert d["metadata"].get("namespace") == NS, d["metadata"]


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("source", [DEPLOY, *OVERLAYS], ids=lambda p: str(p.relative_to(REPO)) if isinstance(p, pathlib.Path) else p)
def test_validates_against_kubernetes_schemas(source, version):
    for doc in kustomize(source):
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f'{doc["kind"]}/{doc["metadata"]["name"]} invalid for {version}: {e.message} at {list(e.path)}')


def rules(role) -> set[tuple[str, str, str, str]]:
    """(group, resource, verb, name) per grant; name "" for any name."""
    out = set()
    for rule in role["rules"]:
        assert "nonResourceURLs" not in rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    for name in rule.get("resourceNames", [""]):
                        assert "*" not in (group, resource, verb), f"wildcard in {rule}"
                        out.add((group, resource, verb, name))
    return out


def expand(table):
    return {(g, r, v, (n[0] if n else "")) for (g, r, *n), verbs in table.items() for v in verbs}


# What the agent does with each resource; update together with the agent's code.
CLUSTER_RULES = {
    # Watches bindings; adds/removes its finalizer elbv2.k8s.aws/resources (update/patch).
    ("elbv2.k8s.aws", "targetgroupbindings"): ["get", "list", "watch", "update", "patch"],
    # Writes observedGeneration and conditions.
    ("elbv2.k8s.aws", "targetgroupbindings/status"): ["patch"],
    # Backends of a binding: the Service, its EndpointSlices, their Pods and Nodes.
    ("", "services"): ["get", "list", "watch"],
    ("discovery.k8s.io", "endpointslices"): ["get", "list", "watch"],
    ("", "pods"): ["get"],
    # Readiness gates target-health.elbv2.k8s.aws/<binding>: the condition on pods that declare it.
    ("", "pods/status"): ["patch"],
    ("", "nodes"): ["get", "list", "watch"],
    # Events on the bindings, in the bindings' namespaces (both event APIs, by client version).
    ("", "events"): ["create", "patch"],
    ("events.k8s.io", "events"): ["create", "patch"],
    # The pod webhook's CA bundle, in its own configuration only.
    ("admissionregistration.k8s.io", "mutatingwebhookconfigurations", "tgb-agent-webhook"): ["get", "patch"],
}
NAMESPACE_RULES = {
    # Multi-cluster ownership records, in the agent's own namespace only.
    ("", "configmaps"): ["get", "list", "watch", "create", "update", "patch", "delete"],
    # Leader election among replicas.
    ("coordination.k8s.io", "leases"): ["get", "create", "update"],
    # The pod webhook's CA and certificate, shared by the replicas (RBAC cannot limit create by name).
    ("", "secrets"): ["create"],
    ("", "secrets", "tgb-agent-webhook-tls"): ["get", "update"],
}


def test_cluster_role_is_exactly_what_the_agent_needs(rendered):
    assert rules(one(rendered, "ClusterRole")) == expand(CLUSTER_RULES)


def test_namespaced_role_is_exactly_what_the_agent_needs(rendered):
    role = one(rendered, "Role")
    assert role["metadata"]["namespace"] == NS
    assert rules(role) == expand(NAMESPACE_RULES)


def test_bindings_point_at_the_agent(rendered):
    sa = one(rendered, "ServiceAccount")
    for kind, role_kind in (("ClusterRoleBinding", "ClusterRole"), ("RoleBinding", "Role")):
        b = one(rendered, kind)
        assert b["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": "tgb-agent"}
        assert b["subjects"] == [{"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": NS}]


def test_serviceaccount_has_the_documented_irsa_placeholder(rendered):
    sa = one(rendered, "ServiceAccount")
    arn = sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
    assert arn == "arn:aws:iam::111122223333:role/REPLACE-ME-tgb-agent"
    assert "REPLACE-ME-tgb-agent" in (DEPLOY / "README.md").read_text()


def agent_container(rendered):
    dep = one(rendered, "Deployment")
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    return dep, c


def test_deployment_is_hardened(rendered):
    dep, c = agent_container(rendered)
    pod = dep["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "tgb-agent"
    psc = pod["securityContext"]
    assert psc["runAsNonRoot"] is True and psc["runAsUser"] == 65532
    assert psc["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = c["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert not sc.get("privileged")
    res = c["resources"]
    for key in ("cpu", "memory"):
        assert key in res["requests"] and key in res["limits"], res
    assert not pod.get("hostNetwork") and not pod.get("volumes")


def test_args_probes_and_ports_agree(rendered):
    dep, c = agent_container(rendered)
    args = c["args"]
    assert args[0] == "run"
    # `--flag=value`, or a bare boolean `--flag`.
    flags = dict(a.split("=", 1) if "=" in a else (a, "true") for a in args[1:])
    assert set(flags) <= {"--cluster-name", "--watch-namespace", "--drift-interval", "--metrics-addr",
                          "--health-addr", "--log-format", "--namespace", "--leader-elect", "--lease-duration",
                          "--reconcile-stuck-after", "--webhook-addr", "--webhook-service",
                          "--webhook-configuration", "--webhook-secret"}
    # Two replicas need leader election, or both would write to AWS.
    if dep["spec"]["replicas"] > 1:
        assert flags.get("--leader-elect") == "true"
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert flags["--metrics-addr"].endswith(f':{ports["metrics"]}')
    assert flags["--health-addr"].endswith(f':{ports["health"]}')
    assert flags["--webhook-addr"].endswith(f':{ports["webhook"]}')
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
    env = {e["name"]: e for e in c["env"]}
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    # $(VAR) references in args must be defined in env, or Kubernetes passes them literally.
    for a in args:
        if "$(" in a:
            assert a.split("$(")[1].split(")")[0] in env, a


def test_settings_configmap_is_referenced(rendered):
    cm = one(rendered, "ConfigMap")
    assert set(cm["data"]) == {"CLUSTER_NAME", "LOG_FORMAT"}
    assert cm["data"]["LOG_FORMAT"] in {"text", "json"}
    _, c = agent_container(rendered)
    refs = {e["valueFrom"]["configMapKeyRef"]["name"] for e in c["env"] if "configMapKeyRef" in e.get("valueFrom", {})}
    assert refs == {cm["metadata"]["name"]}


def test_pdb_selects_the_agent_pods_and_allows_drains(rendered):
    dep = one(rendered, "Deployment")
    pdb = one(rendered, "PodDisruptionBudget")
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert dep["spec"]["selector"]["matchLabels"].items() <= labels.items()
    # With one replica, minAvailable: 1 would block every node drain.
    if dep["spec"]["replicas"] == 1:
        assert "minAvailable" not in pdb["spec"] and pdb["spec"]["maxUnavailable"] >= 1


def test_namespace_is_restricted(rendered):
    ns = one(rendered, "Namespace")
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


@pytest.mark.parametrize("overlay", OVERLAYS, ids=lambda p: p.name)
def test_blue_green_overlays_differ_only_in_cluster_name(overlay):
    docs = kustomize(overlay)
    cm = one(docs, "ConfigMap")
    assert cm["data"]["CLUSTER_NAME"] == overlay.name
    assert cm["data"]["CLUSTER_NAME"] not in ("", "default")


def test_cluster_name_is_left_to_each_cluster(rendered):
    """The agent refuses an empty or `default` --cluster-name, so the base cannot be installed by
    two clusters with the same name by accident: each overlay names its cluster."""
    cm = one(rendered, "ConfigMap")
    assert cm["data"]["CLUSTER_NAME"] == ""
    _, c = agent_container(rendered)
    assert "--cluster-name=$(CLUSTER_NAME)" in c["args"]
    env = {e["name"]: e for e in c["env"]}
    # A unique leader-election identity and the agent's own namespace come from the pod.
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
