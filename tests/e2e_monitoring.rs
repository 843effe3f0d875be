//! End to end: the Grafana dashboard and the Prometheus alerts in `deploy/monitoring/` name only
//! metrics, labels and label values that a running agent exports, and every expression parses as
//! PromQL. Names are taken from the parsed AST (selectors, matchers, `by`/`on` labels), not from text.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use common::*;
use promql_parser::label::{MatchOp, Matcher};
use promql_parser::parser::{self, Expr, LabelModifier, VectorSelector};
use tgb_sandbox::Agent;

/// What one scrape exports: per series name, its label names, and the values seen per label.
#[derive(Debug, Default)]
struct Exported {
    labels: BTreeMap<String, BTreeMap<String, BTreeSet<String>>>,
}

impl Exported {
    /// Reads the text exposition format: `name{k="v",...} value` lines; comments are skipped.
    fn parse(text: &str) -> Result<Self, String> {
        let mut exported = Self::default();
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
            let name_end = line.find(['{', ' ']).ok_or_else(|| format!("no value in {line:?}"))?;
            let labels = exported.labels.entry(line[..name_end].to_owned()).or_default();
            if line[name_end..].starts_with('{') {
                for (k, v) in parse_labels(&line[name_end + 1..]).map_err(|e| format!("{e} in {line:?}"))? {
                    labels.entry(k).or_default().insert(v);
                }
            }
        }
        Ok(exported)
    }
}

/// `k="v",k2="v2"} ...` into pairs, unescaping `\\`, `\"` and `\n`.
fn parse_labels(mut rest: &str) -> Result<Vec<(String, String)>, String> {
    let mut pairs = Vec::new();
    loop {
        rest = rest.trim_start_matches(',');
        if rest.starts_with('}') {
            return Ok(pairs);
        }
        let (key, after) = rest.split_once("=\"").ok_or("a label without =\"")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c)) => value.push(c),
                    None => return Err("a dangling escape".into()),
                },
                Some((i, '"')) => break i,
                Some((_, c)) => value.push(c),
                None => return Err("an unterminated label value".into()),
            }
        };
        pairs.push((key.to_owned(), value));
        rest = &after[end + 1..];
    }
}

/// Every problem of `expr` against `exported`: a parse error, an unknown metric, a label a metric
/// does not carry, an equality matcher on a value never exported, a `by`/`on` label that no metric
/// beneath it carries.
fn check(expr: &str, exported: &Exported) -> Vec<String> {
    match parser::parse(expr) {
        Ok(ast) => {
            let mut problems = Vec::new();
            walk(&ast, exported, &mut problems);
            problems
        }
        Err(e) => vec![format!("does not parse: {e}")],
    }
}

/// Checks `expr` and returns the metric names selected beneath it.
fn walk(expr: &Expr, exported: &Exported, problems: &mut Vec<String>) -> BTreeSet<String> {
    let grouping = |labels: Option<&Vec<String>>, beneath: &BTreeSet<String>, problems: &mut Vec<String>| {
        for label in labels.into_iter().flatten() {
            let carried = beneath.iter().any(|m| exported.labels.get(m).is_some_and(|ls| ls.contains_key(label)));
            if !carried {
                problems.push(format!("grouping label {label:?}: none of {beneath:?} exports it"));
            }
        }
    };
    match expr {
        Expr::Aggregate(a) => {
            let mut beneath = walk(&a.expr, exported, problems);
            if let Some(param) = &a.param {
                beneath.extend(walk(param, exported, problems));
            }
            grouping(a.modifier.as_ref().map(|m| &LabelModifier::labels(m).labels), &beneath, problems);
            beneath
        }
        Expr::Binary(b) => {
            let mut beneath = walk(&b.lhs, exported, problems);
            beneath.extend(walk(&b.rhs, exported, problems));
            if let Some(modifier) = &b.modifier {
                grouping(modifier.matching.as_ref().map(|m| &m.labels().labels), &beneath, problems);
                grouping(modifier.card.labels().map(|l| &l.labels), &beneath, problems);
            }
            beneath
        }
        Expr::Unary(u) => walk(&u.expr, exported, problems),
        Expr::Paren(p) => walk(&p.expr, exported, problems),
        Expr::Subquery(s) => walk(&s.expr, exported, problems),
        Expr::Call(c) => c.args.args.iter().flat_map(|arg| walk(arg, exported, problems)).collect(),
        Expr::VectorSelector(v) => selector(v, exported, problems),
        Expr::MatrixSelector(m) => selector(&m.vs, exported, problems),
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => BTreeSet::new(),
    }
}

fn selector(v: &VectorSelector, exported: &Exported, problems: &mut Vec<String>) -> BTreeSet<String> {
    let Some(name) = &v.name else {
        problems.push(format!("selector {v} names no metric"));
        return BTreeSet::new();
    };
    let Some(labels) = exported.labels.get(name) else {
        problems.push(format!("metric {name} is not exported"));
        return BTreeSet::from([name.clone()]);
    };
    let matchers: Vec<&Matcher> = v
        .matchers
        .matchers
        .iter()
        .chain(v.matchers.or_matchers.iter().flatten())
        .filter(|m| m.name != "__name__")
        .collect();
    for m in matchers {
        match labels.get(&m.name) {
            None => problems.push(format!("metric {name} has no label {:?}", m.name)),
            Some(values) if matches!(m.op, MatchOp::Equal) && !values.contains(&m.value) => {
                problems.push(format!("metric {name} never exports {}={:?} (seen: {values:?})", m.name, m.value))
            }
            Some(_) => {}
        }
    }
    BTreeSet::from([name.clone()])
}

/// Grafana's interval macros stand where PromQL wants a duration; the template variables
/// (`$namespace`) sit inside strings and parse as they are.
fn grafana_to_promql(expr: &str) -> String {
    ["$__rate_interval", "$__interval", "$__range"].iter().fold(expr.to_owned(), |e, m| e.replace(m, "5m"))
}

/// Grafana's `label_values(selector, label)` variable query, as the PromQL that reads the same:
/// `group by (label) (selector)`.
fn label_values_to_promql(query: &str) -> Option<String> {
    let inner = query.trim().strip_prefix("label_values(")?.strip_suffix(')')?;
    let (selector, label) = inner.rsplit_once(',')?;
    Some(format!("group by ({}) ({})", label.trim(), selector.trim()))
}

/// Every PromQL expression of the monitoring files, with where it comes from.
fn monitoring_exprs(dir: &Path) -> Vec<(String, String)> {
    let mut exprs = Vec::new();
    let rules: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(dir.join("prometheusrule.yaml")).expect("read rules"))
            .expect("rules YAML");
    assert_eq!(rules["apiVersion"].as_str(), Some("monitoring.coreos.com/v1"));
    assert_eq!(rules["kind"].as_str(), Some("PrometheusRule"));
    let groups = rules["spec"]["groups"].as_sequence().expect("spec.groups");
    for rule in groups.iter().flat_map(|g| g["rules"].as_sequence().cloned().unwrap_or_default()) {
        let name = rule["alert"].as_str().or(rule["record"].as_str()).unwrap_or("?").to_owned();
        let expr = rule["expr"].as_str().unwrap_or_else(|| panic!("rule {name} has no expr"));
        exprs.push((format!("rule {name}"), expr.to_owned()));
    }
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("grafana-dashboard.json")).expect("read dashboard"))
            .expect("dashboard JSON");
    fn panels(list: &serde_json::Value, exprs: &mut Vec<(String, String)>) {
        for panel in list.as_array().into_iter().flatten() {
            let title = panel["title"].as_str().unwrap_or("?");
            for target in panel["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = target["expr"].as_str() {
                    exprs.push((format!("panel {title:?}"), grafana_to_promql(expr)));
                }
            }
            panels(&panel["panels"], exprs);
        }
    }
    panels(&dashboard["panels"], &mut exprs);
    for variable in dashboard["templating"]["list"].as_array().into_iter().flatten() {
        let query = &variable["query"];
        let Some(query) = query["query"].as_str().or(query.as_str()) else { continue };
        if variable["type"] == "query" {
            let promql = label_values_to_promql(query).unwrap_or_else(|| panic!("variable query {query:?}"));
            exprs.push((format!("variable {}", variable["name"]), promql));
        }
    }
    exprs
}

/// The check itself finds what it is meant to find, so a green e2e run means something.
#[test]
fn the_check_catches_unknown_metrics_labels_and_values() {
    let exported = Exported::parse(
        "# TYPE tgb_binding_targets gauge\n\
         tgb_binding_targets{namespace=\"demo\",name=\"we\\\"b\",state=\"healthy\"} 2\n\
         tgb_leader 1\n\
         tgb_x_bucket{le=\"+Inf\"} 3\n",
    )
    .expect("exposition");
    assert_eq!(exported.labels["tgb_binding_targets"]["name"], BTreeSet::from(["we\"b".to_owned()]));
    let ok = [
        "sum by (namespace, name) (tgb_binding_targets{state=\"healthy\", name=~\"$binding\"}) > 0",
        "(sum(tgb_leader) or vector(0)) < 1",
        "histogram_quantile(0.9, sum by (le) (rate(tgb_x_bucket[5m])))",
    ];
    for expr in ok {
        assert_eq!(check(expr, &exported), Vec::<String>::new(), "{expr}");
    }
    for (expr, expected) in [
        ("tgb_nope", "metric tgb_nope is not exported"),
        ("tgb_binding_targets{nmespace=\"demo\"}", "has no label \"nmespace\""),
        ("tgb_binding_targets{state=\"Healthy\"}", "never exports state=\"Healthy\""),
        ("sum by (operation) (tgb_binding_targets)", "grouping label \"operation\""),
        ("tgb_leader * on (name) group_left (state) tgb_leader", "grouping label \"name\""),
        ("sum(rate(tgb_leader[$__rate_interval]))", "does not parse"),
        ("{__name__=~\"tgb_.*\"}", "names no metric"),
    ] {
        let problems = check(expr, &exported);
        assert!(problems.iter().any(|p| p.contains(expected)), "{expr}: expected {expected:?} in {problems:?}");
    }
    assert_eq!(
        label_values_to_promql("label_values(tgb_binding_ready{namespace=~\"$namespace\"}, name)").as_deref(),
        Some("group by (name) (tgb_binding_ready{namespace=~\"$namespace\"})")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_and_alerts_name_only_what_a_running_agent_exports() {
    let (sandbox, aws, kube) = world("mon", &[Ep::Ready("10.0.0.10"), Ep::Ready("10.0.0.11")]).await;
    let arn = aws.ip_target_group_arn.clone();
    let missing = arn.replace("/mon-ip/", "/nope/");
    assert_ne!(missing, arn);
    // The first RegisterTargets is throttled (target writes make one attempt, no SDK retries); the
    // reconcile's retry gets through.
    sandbox.throttle("RegisterTargets", 1).await.expect("throttle");
    binding(&kube, "demo", "web", ip_binding(&arn)).await;
    binding(&kube, "demo", "broken", ip_binding(&missing)).await;
    let elect = ["--drift-interval", "3s", "--leader-elect"];
    let agent = Agent::start(AGENT.as_ref(), &sandbox, &elect).expect("agent");

    wait_for_targets(&sandbox, &arn, &["10.0.0.10:8080", "10.0.0.11:8080"]).await;
    wait_for_condition(&kube, "demo", "broken", "False", "TargetGroupNotFound").await;
    // Health comes from AWS: initial first, then healthy once the emulator says so.
    let healthy = "tgb_binding_targets{namespace=\"demo\",name=\"web\",state=\"healthy\"} 2";
    let text = eventually("both targets healthy in /metrics", Duration::from_secs(30), || async {
        agent.metrics().ok().filter(|m| m.lines().any(|l| l == healthy))
    })
    .await;
    for line in [
        "tgb_binding_ready{namespace=\"demo\",name=\"web\"} 1",
        "tgb_binding_ready{namespace=\"demo\",name=\"broken\"} 0",
        "tgb_binding_targets{namespace=\"demo\",name=\"web\",state=\"initial\"} 0",
        "tgb_leader 1",
        "tgb_aws_calls_total{operation=\"RegisterTargets\",outcome=\"Throttled\"} 1",
        "tgb_reconcile_errors_total{reason=\"Throttled\"} 1",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?} in:\n{text}");
    }
    assert!(text.contains("tgb_reconcile_errors_total{reason=\"TargetGroupNotFound\"}"), "{text}");
    let registrations = text
        .lines()
        .find_map(|l| l.strip_prefix("tgb_time_to_register_seconds_count "))
        .and_then(|n| n.parse::<u64>().ok());
    assert_eq!(registrations, Some(1), "one reconcile registered (the throttled one failed):\n{text}");

    // A standby exports tgb_leader 0.
    let standby = Agent::start_with_env(AGENT.as_ref(), &sandbox, &elect, &[("POD_NAME", "standby")]).expect("standby");
    let standby_text = eventually("the standby's /metrics", Duration::from_secs(20), || async {
        standby.metrics().ok().filter(|m| m.contains("tgb_leader"))
    })
    .await;
    assert!(standby_text.lines().any(|l| l == "tgb_leader 0"), "{standby_text}");

    let exported = Exported::parse(&text).expect("exposition");
    let exprs = monitoring_exprs(&tgb_sandbox::repo_root().join("deploy/monitoring"));
    assert!(exprs.len() >= 4 + 10, "found only {} expressions", exprs.len());
    let problems: Vec<String> = exprs
        .iter()
        .flat_map(|(origin, expr)| check(expr, &exported).into_iter().map(move |p| format!("{origin}: {p}\n  {expr}")))
        .collect();
    assert!(problems.is_empty(), "{}\n\nscraped:\n{text}", problems.join("\n"));
    eprintln!("checked {} expressions against {} exported series names", exprs.len(), exported.labels.len());

    // A deleted binding leaves no series behind (no stale alert keeps firing for it).
    delete_binding(&kube, "demo", "web").await;
    let after = eventually("web's series gone", Duration::from_secs(30), || async {
        agent.metrics().ok().filter(|m| !m.contains("name=\"web\""))
    })
    .await;
    assert!(after.contains("tgb_binding_ready{namespace=\"demo\",name=\"broken\"} 0"), "{after}");
}

/// The PodMonitor scrapes the pods deploy/ runs, on the port that serves `/metrics`.
#[test]
fn pod_monitor_selects_the_agents_metrics_port() {
    let root = tgb_sandbox::repo_root();
    let read = |path: &str| -> serde_yaml::Value {
        serde_yaml::from_str(&std::fs::read_to_string(root.join(path)).expect(path)).expect(path)
    };
    let monitor = read("deploy/monitoring/podmonitor.yaml");
    let deployment = read("deploy/deployment.yaml");
    let template = &deployment["spec"]["template"];
    let selector = monitor["spec"]["selector"]["matchLabels"].as_mapping().expect("matchLabels");
    assert!(!selector.is_empty());
    for (key, value) in selector {
        assert_eq!(&template["metadata"]["labels"][key], value, "pod label {key:?}");
    }
    let ports: Vec<&serde_yaml::Value> = template["spec"]["containers"]
        .as_sequence()
        .into_iter()
        .flatten()
        .flat_map(|c| c["ports"].as_sequence().into_iter().flatten())
        .collect();
    for endpoint in monitor["spec"]["podMetricsEndpoints"].as_sequence().expect("podMetricsEndpoints") {
        let port = ports.iter().find(|p| p["name"] == endpoint["port"]).expect("a container port of that name");
        let listens = template["spec"]["containers"][0]["args"]
            .as_sequence()
            .into_iter()
            .flatten()
            .filter_map(|a| a.as_str()?.strip_prefix("--metrics-addr=")?.rsplit_once(':')?.1.parse::<u64>().ok())
            .next();
        assert_eq!(port["containerPort"].as_u64(), listens, "the port --metrics-addr listens on");
        assert_eq!(endpoint["path"].as_str(), Some("/metrics"));
    }
}
