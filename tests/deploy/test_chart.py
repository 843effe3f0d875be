"""charts/tgb-agent: lints strictly, renders valid objects for several value sets, refuses a missing
clusterName, uses only flags the agent has, and with its defaults installs exactly what deploy/
(kustomize) installs: same objects, RBAC rules, container, probes, resources and
PodDisruptionBudget. deploy/ has two objects the chart leaves out: the Namespace (Helm installs
into the release namespace) and the settings ConfigMap (the chart passes CLUSTER_NAME and
LOG_FORMAT as plain env values; the comparison resolves deploy/'s references to it).

helm comes from scripts/install-helm (pinned in tests/helm/go.mod; a no-op once built)."""

import difflib
import json
import os
import pathlib
import re
import shutil
import subprocess

import kubernetes_validate
import pytest
import yaml

REPO = pathlib.Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "tgb-agent"
DEPLOY = REPO / "deploy"
NS = "tgb-system"
CLUSTER = "prod-eu-1"
IRSA = {"eks.amazonaws.com/role-arn": "arn:aws:iam::111122223333:role/REPLACE-ME-tgb-agent"}
K8S_VERSIONS = ["1.29.0", "1.37.0"]
INSTANCE = "app.kubernetes.io/instance"


@pytest.fixture(scope="session")
def helm(tmp_path_factory) -> list[str]:
    proc = subprocess.run([str(REPO / "scripts" / "install-helm")], capture_output=True, text=True, timeout=3600)
    assert proc.returncode == 0, f"scripts/install-helm failed:\n{proc.stderr}"
    binary = pathlib.Path(proc.stdout.strip().splitlines()[-1]) / "helm"
    assert binary.is_file(), binary
    home = tmp_path_factory.mktemp("helm-home")
    # Keep helm's caches and settings out of the user's home.
    for var in ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME"):
        os.environ[var] = str(home / var.lower())
    return [str(binary)]


def run_helm(helm, *args) -> subprocess.CompletedProcess:
    return subprocess.run([*helm, *args], capture_output=True, text=True, timeout=120)


def values_file(tmp_path, values: dict) -> str:
    path = tmp_path / f"values-{len(list(tmp_path.glob('values-*')))}.yaml"
    path.write_text(yaml.safe_dump(values))
    return str(path)


def template(helm, tmp_path, values: dict, release="tgb-agent", namespace=NS, crds=False) -> list[dict]:
    args = ["template", release, str(CHART), "-n", namespace, "-f", values_file(tmp_path, values)]
    proc = run_helm(helm, *args, *(["--include-crds"] if crds else []))
    assert proc.returncode == 0, f"helm {' '.join(args)} failed:\n{proc.stderr}"
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def by_kind(docs, kind):
    return [d for d in docs if d["kind"] == kind]


def one(docs, kind):
    found = by_kind(docs, kind)
    assert len(found) == 1, f"expected one {kind}, got {[d['metadata']['name'] for d in found]}"
    return found[0]


def container(docs):
    (c,) = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    return c


def env_of(docs) -> dict:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(docs)["env"]}


# Value sets the chart must render valid objects for; `check` asserts what each one is for.
def check_defaults(docs):
    kinds = sorted((d["kind"], d["metadata"]["name"]) for d in docs)
    assert kinds == sorted([
        ("ClusterRole", "tgb-agent"), ("ClusterRoleBinding", "tgb-agent"), ("Deployment", "tgb-agent"),
        ("PodDisruptionBudget", "tgb-agent"), ("Role", "tgb-agent"), ("RoleBinding", "tgb-agent"),
        ("ServiceAccount", "tgb-agent"), ("Service", "tgb-agent-webhook"),
        ("MutatingWebhookConfiguration", "tgb-agent-webhook"),
    ])
    assert "annotations" not in one(docs, "ServiceAccount")["metadata"]
    (hook,) = one(docs, "MutatingWebhookConfiguration")["webhooks"]
    assert hook["failurePolicy"] == "Ignore"
    assert hook["clientConfig"]["service"] == {"name": "tgb-agent-webhook", "namespace": NS, "path": "/mutate-v1-pod",
                                               "port": 443}
    assert one(docs, "Service")["spec"]["selector"] == one(docs, "Deployment")["spec"]["selector"]["matchLabels"]
    assert "--webhook-secret=tgb-agent-webhook-tls" in container(docs)["args"]


def webhook_rules(docs) -> list[dict]:
    return [r for kind in ("ClusterRole", "Role") for r in one(docs, kind)["rules"]
            if r["resources"][0] in ("secrets", "mutatingwebhookconfigurations")]


def check_no_injection(docs):
    assert not by_kind(docs, "MutatingWebhookConfiguration") and not by_kind(docs, "Service")
    assert "--pod-readiness-gate-inject=false" in container(docs)["args"]
    assert not [p for p in container(docs)["ports"] if p["name"] == "webhook"]
    assert not webhook_rules(docs), "no Secret or webhook-configuration rights without a webhook"


def check_fail_policy(docs):
    (hook,) = one(docs, "MutatingWebhookConfiguration")["webhooks"]
    assert hook["failurePolicy"] == "Fail" and hook["timeoutSeconds"] == 5


def check_by_url(docs):
    assert not by_kind(docs, "Service"), "reached by URL: no Service"
    (hook,) = one(docs, "MutatingWebhookConfiguration")["webhooks"]
    assert hook["clientConfig"] == {"url": "https://tgb.example.com:9443/mutate-v1-pod"}
    assert "--webhook-hosts=tgb.example.com" in container(docs)["args"]


def check_namespace_selectors(docs):
    (hook,) = one(docs, "MutatingWebhookConfiguration")["webhooks"]
    assert hook["namespaceSelector"] == {"matchExpressions": [
        {"key": "team", "operator": "In", "values": ["shop", "checkout"]}]}


def check_cert_manager(docs):
    cert = one(docs, "Certificate")
    assert cert["spec"]["secretName"] == "tgb-agent-webhook-tls"
    assert cert["spec"]["dnsNames"][0] == f"tgb-agent-webhook.{NS}.svc"
    assert one(docs, "Issuer")["spec"] == {"selfSigned": {}}
    mwc = one(docs, "MutatingWebhookConfiguration")
    assert mwc["metadata"]["annotations"] == {"cert-manager.io/inject-ca-from": f"{NS}/tgb-agent-webhook"}
    c = container(docs)
    assert "--webhook-cert-dir=/var/run/tgb-agent/webhook-tls" in c["args"]
    assert c["volumeMounts"][0]["mountPath"] == "/var/run/tgb-agent/webhook-tls"
    (volume,) = one(docs, "Deployment")["spec"]["template"]["spec"]["volumes"]
    assert volume["secret"]["secretName"] == "tgb-agent-webhook-tls"
    assert not webhook_rules(docs), "cert-manager keeps the certificate: the agent needs no Secret rights"


def check_monitoring(docs):
    pm = one(docs, "PodMonitor")
    assert pm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert pm["spec"]["podMetricsEndpoints"] == [{"port": "metrics", "path": "/metrics", "interval": "1m"}]
    assert pm["spec"]["selector"]["matchLabels"] == one(docs, "Deployment")["spec"]["selector"]["matchLabels"]
    rule = one(docs, "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    (dashboard,) = [d for d in by_kind(docs, "ConfigMap") if d["metadata"]["name"] == "tgb-agent-dashboard"]
    assert dashboard["metadata"]["namespace"] == "monitoring"
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboard["metadata"]["annotations"] == {"grafana_folder": "AWS"}


def check_existing_service_account(docs):
    assert not by_kind(docs, "ServiceAccount")
    assert one(docs, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "agent-sa"
    for kind in ("ClusterRoleBinding", "RoleBinding"):
        assert one(docs, kind)["subjects"] == [{"kind": "ServiceAccount", "name": "agent-sa", "namespace": NS}]


def check_no_rbac(docs):
    assert not [d for d in docs if d["kind"] in ("ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")]
    assert one(docs, "ServiceAccount")


def check_one_replica_no_pdb(docs):
    dep = one(docs, "Deployment")
    assert dep["spec"]["replicas"] == 1
    assert not by_kind(docs, "PodDisruptionBudget")
    assert "--leader-elect" in container(docs)["args"]


def check_min_available(docs):
    assert one(docs, "PodDisruptionBudget")["spec"]["minAvailable"] == 1
    assert "maxUnavailable" not in one(docs, "PodDisruptionBudget")["spec"]


def check_everything_set(docs):
    dep = one(docs, "Deployment")
    pod = dep["spec"]["template"]
    spec = pod["spec"]
    c = container(docs)
    assert c["image"] == "111122223333.dkr.ecr.eu-west-1.amazonaws.com/tgb-agent:0.1.1"
    assert c["imagePullPolicy"] == "Always"
    assert spec["imagePullSecrets"] == [{"name": "ecr"}]
    assert spec["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert spec["tolerations"] == [{"key": "CriticalAddonsOnly", "operator": "Exists"}]
    assert spec["affinity"]["podAntiAffinity"]
    assert spec["topologySpreadConstraints"][0]["topologyKey"] == "topology.kubernetes.io/zone"
    assert spec["priorityClassName"] == "system-cluster-critical"
    assert pod["metadata"]["labels"]["team"] == "platform"
    assert pod["metadata"]["annotations"]["example.com/owner"] == "platform"
    assert pod["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    assert dep["metadata"]["annotations"] == {"example.com/deployed-by": "argocd"}
    assert c["args"][-3:] == ["--watch-namespace=apps", "--drift-interval=10m", "--aws-write-rate=8:40"]
    assert env_of(docs)["AWS_REGION"] == "eu-west-1"
    assert env_of(docs)["LOG_FORMAT"] == "text"
    assert c["resources"] == {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "512Mi"}}
    sa = one(docs, "ServiceAccount")
    assert sa["metadata"]["annotations"] == {"eks.amazonaws.com/role-arn": "arn:aws:iam::111122223333:role/prod"}
    for d in docs:
        assert d["metadata"]["labels"]["cost-center"] == "42", d["kind"]


def check_names_from_release(docs):
    for d in docs:
        assert d["metadata"]["name"] in ("edge-tgb-agent", "edge-tgb-agent-webhook"), (d["kind"], d["metadata"]["name"])
        assert d["metadata"]["labels"][INSTANCE] == "edge"
    assert "--webhook-configuration=edge-tgb-agent-webhook" in container(docs)["args"]
    assert "--webhook-secret=edge-tgb-agent-webhook-tls" in container(docs)["args"]
    secret_rule = [r for r in one(docs, "Role")["rules"] if r.get("resourceNames")]
    assert secret_rule[0]["resourceNames"] == ["edge-tgb-agent-webhook-tls"]
    for kind in ("ClusterRoleBinding", "RoleBinding"):
        assert one(docs, kind)["subjects"][0]["name"] == "edge-tgb-agent"
        assert one(docs, kind)["roleRef"]["name"] == "edge-tgb-agent"


CASES = {
    "defaults": ({}, "tgb-agent", check_defaults),
    "monitoring": ({
        "podMonitor": {"enabled": True, "interval": "1m", "additionalLabels": {"release": "kube-prometheus-stack"}},
        "prometheusRule": {"enabled": True, "additionalLabels": {"release": "kube-prometheus-stack"}},
        "grafanaDashboard": {"enabled": True, "namespace": "monitoring", "annotations": {"grafana_folder": "AWS"}},
    }, "tgb-agent", check_monitoring),
    "existing-service-account": ({"serviceAccount": {"create": False, "name": "agent-sa"}}, "tgb-agent",
                                 check_existing_service_account),
    "no-rbac": ({"rbac": {"create": False}}, "tgb-agent", check_no_rbac),
    "one-replica-no-pdb": ({"replicaCount": 1, "podDisruptionBudget": None}, "tgb-agent", check_one_replica_no_pdb),
    "pdb-min-available": ({"podDisruptionBudget": {"maxUnavailable": None, "minAvailable": 1}}, "tgb-agent",
                          check_min_available),
    "everything-set": ({
        "image": {"repository": "111122223333.dkr.ecr.eu-west-1.amazonaws.com/tgb-agent", "tag": "0.1.1",
                  "pullPolicy": "Always"},
        "imagePullSecrets": [{"name": "ecr"}],
        "serviceAccount": {"annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::111122223333:role/prod"}},
        "logFormat": "text",
        "watchNamespace": "apps",
        "extraArgs": ["--drift-interval=10m", "--aws-write-rate=8:40"],
        "env": {"AWS_REGION": "eu-west-1"},
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"cpu": None, "memory": "512Mi"}},
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "CriticalAddonsOnly", "operator": "Exists"}],
        "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{
            "weight": 100, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname", "labelSelector": {
                "matchLabels": {"app.kubernetes.io/name": "tgb-agent"}}}}]}},
        "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
                                       "whenUnsatisfiable": "ScheduleAnyway",
                                       "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "tgb-agent"}}}],
        "priorityClassName": "system-cluster-critical",
        "podLabels": {"team": "platform"},
        "podAnnotations": {"example.com/owner": "platform"},
        "deploymentAnnotations": {"example.com/deployed-by": "argocd"},
        "additionalLabels": {"cost-center": "42"},
    }, "tgb-agent", check_everything_set),
    "release-name": ({}, "edge", check_names_from_release),
    "no-injection": ({"enablePodReadinessGateInject": False}, "tgb-agent", check_no_injection),
    "fail-policy": ({"webhookConfig": {"failurePolicy": "Fail", "timeoutSeconds": 5}}, "tgb-agent", check_fail_policy),
    "cert-manager": ({"enableCertManager": True}, "tgb-agent", check_cert_manager),
    "namespace-selectors": ({"webhookNamespaceSelectors": [
        {"key": "team", "operator": "In", "values": ["shop", "checkout"]}]}, "tgb-agent", check_namespace_selectors),
    "by-url": ({"webhookConfig": {"url": "https://tgb.example.com:9443"}}, "tgb-agent", check_by_url),
}


@pytest.mark.parametrize("case", CASES)
def test_renders_valid_objects(helm, tmp_path, case):
    values, release, check = CASES[case]
    docs = template(helm, tmp_path, {"clusterName": CLUSTER, **values}, release=release)
    check(docs)
    for d in docs:
        # ArgoCD runs no Helm hooks the way Helm does: the chart has none.
        assert not any(k.startswith("helm.sh/hook") for k in (d["metadata"].get("annotations") or {})), d
        assert d["kind"] != "Namespace", "the release namespace is the user's (helm install -n NS --create-namespace)"
        if d["apiVersion"].startswith(("monitoring.coreos.com/", "cert-manager.io/")):
            continue  # the Prometheus Operator's and cert-manager's kinds: kubernetes-validate has no schema for them
        assert d["metadata"].get("namespace", NS) in (NS, "monitoring")
        for version in K8S_VERSIONS:
            try:
                kubernetes_validate.validate(d, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                pytest.fail(f'{case}: {d["kind"]}/{d["metadata"]["name"]} invalid for {version}: {e.message} at {list(e.path)}')


@pytest.mark.parametrize("case", CASES)
def test_lint_strict(helm, tmp_path, case):
    values, _, _ = CASES[case]
    proc = run_helm(helm, "lint", "--strict", str(CHART), "-f", values_file(tmp_path, {"clusterName": CLUSTER, **values}))
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("values, message", [
    ({}, "clusterName is required: set it to a name unique among the clusters"),
    ({"clusterName": ""}, "clusterName is required"),
    ({"clusterName": "default"}, "clusterName must not be `default`"),
    ({"clusterName": CLUSTER, "logFormat": "yaml"}, "at '/logFormat': value must be one of 'text', 'json'"),
    ({"clusterName": CLUSTER, "extraArgs": ["drift-interval=1m"]}, "at '/extraArgs/0'"),
    ({"clusterName": CLUSTER, "webhookConfig": {"url": "http://x:9443/path"}}, "at '/webhookConfig/url'"),
], ids=["unset", "empty", "default", "bad-log-format", "arg-without-dashes", "bad-webhook-url"])
def test_refuses_bad_values(helm, tmp_path, values, message):
    proc = run_helm(helm, "template", "tgb-agent", str(CHART), "-n", NS, "-f", values_file(tmp_path, values))
    assert proc.returncode != 0, proc.stdout
    assert message in proc.stderr, proc.stderr


def agent_flags() -> set[str]:
    """The long flags of `tgb-agent run`, from the clap attributes in src/cli.rs."""
    source = (REPO / "src" / "cli.rs").read_text()
    fields = re.findall(r"#\[arg\(long\b.*?\)\]\s*pub (\w+)\s*:", source, flags=re.S)
    assert {"cluster_name", "leader_elect", "log_format"} <= set(fields), fields
    return {"--" + f.replace("_", "-") for f in fields}


def test_args_are_flags_the_agent_has(helm, tmp_path):
    flags = agent_flags()
    for case, (values, release, _) in CASES.items():
        c = container(template(helm, tmp_path, {"clusterName": CLUSTER, **values}, release=release))
        assert c["args"][0] == "run", case
        for arg in c["args"][1:]:
            assert arg.split("=", 1)[0] in flags, f"{case}: {arg} is not a flag of `tgb-agent run` ({sorted(flags)})"
        env = {e["name"] for e in c["env"]}
        for arg in c["args"]:
            for var in re.findall(r"\$\((\w+)\)", arg):
                assert var in env, f"{case}: {arg} refers to ${var}, which the container does not define"


# --- One source of truth: the chart with its defaults against deploy/ -------------------------


def kustomize_with_cluster_name(tmp_path) -> list[dict]:
    """deploy/ through an overlay that sets CLUSTER_NAME, as deploy/README.md tells users to."""
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    base = os.path.relpath(DEPLOY, overlay)  # kustomize takes a base by a relative path only
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump({
        "resources": [base],
        "configMapGenerator": [{"name": "tgb-agent-settings", "behavior": "merge",
                                "literals": [f"CLUSTER_NAME={CLUSTER}"]}],
    }))
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is needed for `kubectl kustomize`"
    proc = subprocess.run([kubectl, "kustomize", str(overlay)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def comparable_deploy(docs) -> dict:
    """deploy/'s objects by (kind, name), less the Namespace and the settings ConfigMap, whose
    values replace the container's references to them."""
    (settings,) = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("tgb-agent-settings")]
    out = {}
    for d in docs:
        if d is settings or d["kind"] == "Namespace":
            continue
        if d["kind"] == "Deployment":
            for c in d["spec"]["template"]["spec"]["containers"]:
                for e in c.get("env", []):
                    ref = e.get("valueFrom", {}).get("configMapKeyRef")
                    if ref:
                        assert ref["name"] == settings["metadata"]["name"], ref
                        e.pop("valueFrom")
                        e["value"] = settings["data"][ref["key"]]
        out[(d["kind"], d["metadata"]["name"])] = strip_labels(d)
    return out


def comparable_chart(docs) -> dict:
    out = {}
    for d in docs:
        if d["kind"] == "Deployment":
            labels = d["spec"]["template"]["metadata"]["labels"]
            assert labels.pop(INSTANCE) == "tgb-agent", labels
        out[(d["kind"], d["metadata"]["name"])] = strip_labels(d)
    return out


def strip_labels(d) -> dict:
    """Object labels differ by design (Helm's standard labels, kustomize's common labels; checked
    in test_labels_name_the_app); everything else must be equal. YAML comments are gone already."""
    d = json.loads(json.dumps(d))
    d["metadata"].pop("labels", None)
    return d


def dump(d) -> list[str]:
    return yaml.safe_dump(d, sort_keys=True, default_flow_style=False).splitlines(keepends=True)


def test_chart_defaults_install_what_deploy_installs(helm, tmp_path):
    chart = comparable_chart(template(
        helm, tmp_path, {"clusterName": CLUSTER, "serviceAccount": {"annotations": IRSA}}, crds=True))
    deploy = comparable_deploy(kustomize_with_cluster_name(tmp_path))
    assert sorted(chart) == sorted(deploy), (
        f"objects only in the chart: {sorted(set(chart) - set(deploy))}; "
        f"only in deploy/: {sorted(set(deploy) - set(chart))}"
    )
    diffs = []
    for key in sorted(deploy):
        if chart[key] != deploy[key]:
            diffs.append("".join(difflib.unified_diff(
                dump(deploy[key]), dump(chart[key]), f"deploy/ {key[0]}/{key[1]}", f"chart {key[0]}/{key[1]}")))
    assert not diffs, "the chart's defaults and deploy/ differ (change both, or deploy/ only through an overlay):\n" + "\n".join(diffs)


def test_labels_name_the_app(helm, tmp_path):
    for d in template(helm, tmp_path, {"clusterName": CLUSTER}):
        labels = d["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "tgb-agent" and labels["app.kubernetes.io/part-of"] == "tgb-agent"
        assert labels["app.kubernetes.io/managed-by"] == "Helm" and labels[INSTANCE] == "tgb-agent"


def test_monitoring_objects_are_deploys(helm, tmp_path):
    """The PodMonitor, PrometheusRule and dashboard are deploy/monitoring's (the rules and the
    dashboard are read from the chart's copies, which test_crd_sync.py keeps identical)."""
    values = {"clusterName": CLUSTER, "podMonitor": {"enabled": True}, "prometheusRule": {"enabled": True},
              "grafanaDashboard": {"enabled": True}}
    docs = template(helm, tmp_path, values, namespace="observability")
    monitoring = DEPLOY / "monitoring"
    podmonitor = yaml.safe_load((monitoring / "podmonitor.yaml").read_text())
    assert one(docs, "PodMonitor")["spec"] == podmonitor["spec"]
    rule = yaml.safe_load((monitoring / "prometheusrule.yaml").read_text())
    text = json.dumps(rule["spec"])
    assert "Lease tgb-system/tgb-agent" in text
    expected = json.loads(text.replace("Lease tgb-system/", "Lease observability/"))
    assert one(docs, "PrometheusRule")["spec"] == expected
    assert one(docs, "PrometheusRule")["metadata"]["namespace"] == "observability"
    dashboard = one(docs, "ConfigMap")
    assert json.loads(dashboard["data"]["tgb-agent.json"]) == json.loads((monitoring / "grafana-dashboard.json").read_text())
    assert dashboard["metadata"]["namespace"] == "observability"


def test_crds_are_in_crds_dir_only(helm, tmp_path):
    """Helm installs crds/ when missing and never upgrades or deletes it (so `helm uninstall`
    keeps every binding); a CRD under templates/ would be deleted with the release."""
    crds = list((CHART / "crds").iterdir())
    assert [p.name for p in crds] == ["targetgroupbindings.elbv2.k8s.aws.yaml"]
    assert not by_kind(template(helm, tmp_path, {"clusterName": CLUSTER}), "CustomResourceDefinition")
