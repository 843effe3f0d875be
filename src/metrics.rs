//! Prometheus metrics, rendered in the text exposition format.
//!
//! The dashboard and alerts in `deploy/monitoring/` are written against these names;
//! `tests/e2e_monitoring.rs` fails when they name a metric or label a running agent does not export.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

use crate::plan::health::HealthSummary;

const DURATION_BUCKETS: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];
/// Registration spans AWS round trips, a live read and record writes: seconds, not milliseconds.
const REGISTER_BUCKETS: [f64; 10] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];
/// An admission answers from memory: well under a millisecond, or something is wrong.
const ADMISSION_BUCKETS: [f64; 10] = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 1.0];

const RECONCILE_DURATION: &str = "tgb_reconcile_duration_seconds";
const TIME_TO_REGISTER: &str = "tgb_time_to_register_seconds";
const BINDING_TARGETS: &str = "tgb_binding_targets";
const BINDING_READY: &str = "tgb_binding_ready";
const REGISTERED_TARGETS: &str = "tgb_registered_targets";
const LEADER: &str = "tgb_leader";
const ADMISSION_DURATION: &str = "tgb_webhook_admission_duration_seconds";
const ADMISSIONS: &str = "tgb_webhook_admissions_total";
/// Families labelled by binding (`namespace`, `name`): dropped together when the binding is gone.
const PER_BINDING: [&str; 3] = [BINDING_TARGETS, BINDING_READY, REGISTERED_TARGETS];

/// `# HELP` text per family; every family the agent exports is listed (a unit test checks).
const HELP: [(&str, &str); 12] = [
    ("tgb_aws_calls_total", "AWS API calls by operation and outcome (success, or the error's reason, e.g. Throttled)"),
    ("tgb_reconciles_total", "Reconciles of bindings by outcome"),
    ("tgb_reconcile_errors_total", "Failed reconciles by reason (the Ready condition's reason)"),
    ("tgb_target_changes_total", "Targets registered or deregistered"),
    (REGISTERED_TARGETS, "Desired targets of a binding registered in its target group"),
    (BINDING_TARGETS, "A binding's desired targets by AWS target health state, as last read from AWS"),
    (BINDING_READY, "1 when the binding's Ready condition is True, 0 when False"),
    (LEADER, "1 while this replica leads (holds the lease, or runs with --leader-elect=false), 0 otherwise"),
    (RECONCILE_DURATION, "Duration of reconciles"),
    (ADMISSION_DURATION, "Time the pod webhook took to answer an admission request (TLS excluded)"),
    (
        ADMISSIONS,
        "Pod admission requests by outcome: injected (gates added or legacy ones removed), unchanged, \
         not_synced (answered before the webhook's index had listed bindings and Services: nothing injected), \
         rejected (not an AdmissionReview)",
    ),
    (
        TIME_TO_REGISTER,
        "Seconds from the start of a reconcile to the end of its RegisterTargets calls, for reconciles that \
         registered at least one target (excludes the time a change waited to be reconciled)",
    ),
];

type Labels = Vec<(&'static str, String)>;

struct Histogram {
    bounds: &'static [f64],
    buckets: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self { bounds, buckets: vec![0; bounds.len()], sum: 0.0, count: 0 }
    }

    fn observe(&mut self, took: Duration) {
        let secs = took.as_secs_f64();
        for (bucket, le) in self.buckets.iter_mut().zip(self.bounds) {
            if secs <= *le {
                *bucket += 1;
            }
        }
        self.sum += secs;
        self.count += 1;
    }
}

struct Families {
    counters: BTreeMap<(&'static str, Labels), u64>,
    gauges: BTreeMap<(&'static str, Labels), i64>,
    /// Rendered even before the first observation, so dashboards show zero rather than no data.
    histograms: BTreeMap<&'static str, Histogram>,
}

impl Default for Families {
    fn default() -> Self {
        let histograms = BTreeMap::from([
            (RECONCILE_DURATION, Histogram::new(&DURATION_BUCKETS)),
            (TIME_TO_REGISTER, Histogram::new(&REGISTER_BUCKETS)),
            (ADMISSION_DURATION, Histogram::new(&ADMISSION_BUCKETS)),
        ]);
        Self { counters: BTreeMap::new(), gauges: BTreeMap::new(), histograms }
    }
}

/// The agent's metrics. Cheap to update from any task.
#[derive(Default)]
pub struct Metrics {
    families: Mutex<Families>,
}

fn binding_labels(namespace: &str, name: &str) -> Labels {
    vec![("namespace", namespace.into()), ("name", name.into())]
}

fn gauge_value(count: usize) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

impl Metrics {
    fn with<T>(&self, f: impl FnOnce(&mut Families) -> T) -> T {
        // Metrics must never take the agent down; a poisoned lock still holds valid numbers.
        f(&mut self.families.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn inc(&self, name: &'static str, labels: Labels, by: u64) {
        self.with(|f| *f.counters.entry((name, labels)).or_default() += by);
    }

    fn observe(&self, name: &'static str, took: Duration) {
        self.with(|f| {
            if let Some(h) = f.histograms.get_mut(name) {
                h.observe(took);
            }
        });
    }

    pub fn aws_call(&self, operation: &'static str, outcome: &str) {
        self.inc("tgb_aws_calls_total", vec![("operation", operation.into()), ("outcome", outcome.into())], 1);
    }

    pub fn reconcile(&self, outcome: &str, took: Duration) {
        self.inc("tgb_reconciles_total", vec![("outcome", outcome.into())], 1);
        self.observe(RECONCILE_DURATION, took);
    }

    pub fn reconcile_error(&self, reason: &str) {
        self.inc("tgb_reconcile_errors_total", vec![("reason", reason.into())], 1);
    }

    pub fn targets_changed(&self, direction: &'static str, count: usize) {
        self.inc("tgb_target_changes_total", vec![("direction", direction.into())], count as u64);
    }

    /// `None`: the binding is gone, and every per-binding series of it is dropped with it (its
    /// health and Ready too), so deleted bindings neither linger on dashboards nor keep alerts firing.
    pub fn registered_targets(&self, namespace: &str, name: &str, count: Option<usize>) {
        self.with(|f| match count {
            Some(count) => {
                f.gauges.insert((REGISTERED_TARGETS, binding_labels(namespace, name)), gauge_value(count));
            }
            None => f.gauges.retain(|(family, labels), _| {
                !(PER_BINDING.contains(family) && labels_of_binding(labels) == [namespace, name])
            }),
        });
    }

    /// What a successful apply observed: Ready, and the health of the binding's desired targets
    /// per AWS state (all seven states always exported, zeros included, so `== 0` alerts work).
    pub fn binding_observed(&self, namespace: &str, name: &str, ready: bool, health: Option<&HealthSummary>) {
        self.binding_ready(namespace, name, ready);
        let Some(h) = health else { return };
        self.with(|f| {
            for (state, count) in [
                ("healthy", h.healthy),
                ("initial", h.initial),
                ("unhealthy", h.unhealthy),
                ("draining", h.draining),
                ("unused", h.unused),
                ("unavailable", h.unavailable),
                ("notRegistered", h.missing),
            ] {
                let mut labels = binding_labels(namespace, name);
                labels.push(("state", state.into()));
                f.gauges.insert((BINDING_TARGETS, labels), gauge_value(count));
            }
        });
    }

    pub fn binding_ready(&self, namespace: &str, name: &str, ready: bool) {
        self.with(|f| f.gauges.insert((BINDING_READY, binding_labels(namespace, name)), i64::from(ready)));
    }

    pub fn leader(&self, leading: bool) {
        self.with(|f| f.gauges.insert((LEADER, Vec::new()), i64::from(leading)));
    }

    /// `took`: from the reconcile's start until its RegisterTargets calls returned. Reconciles that
    /// registered nothing are not observed: they would drown the figure in no-op passes.
    pub fn time_to_register(&self, registered: usize, took: Duration) {
        if registered > 0 {
            self.observe(TIME_TO_REGISTER, took);
        }
    }

    pub fn admission(&self, outcome: &'static str, took: Duration) {
        self.inc(ADMISSIONS, vec![("outcome", outcome.into())], 1);
        self.observe(ADMISSION_DURATION, took);
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        self.with(|f| {
            let mut out = String::new();
            let mut last = "";
            let mut header = |out: &mut String, name: &'static str, kind: &str| {
                if name != last {
                    if let Some((_, help)) = HELP.iter().find(|(n, _)| *n == name) {
                        let _ = writeln!(out, "# HELP {name} {help}");
                    }
                    let _ = writeln!(out, "# TYPE {name} {kind}");
                    last = name;
                }
            };
            for ((name, labels), value) in &f.counters {
                header(&mut out, name, "counter");
                let _ = writeln!(out, "{name}{} {value}", render_labels(labels));
            }
            for ((name, labels), value) in &f.gauges {
                header(&mut out, name, "gauge");
                let _ = writeln!(out, "{name}{} {value}", render_labels(labels));
            }
            for (name, h) in &f.histograms {
                header(&mut out, name, "histogram");
                for (le, n) in h.bounds.iter().zip(&h.buckets) {
                    let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {n}");
                }
                let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", h.count);
                let _ = writeln!(out, "{name}_sum {}", h.sum);
                let _ = writeln!(out, "{name}_count {}", h.count);
            }
            out
        })
    }
}

/// The (namespace, name) values of a per-binding series, in label order.
fn labels_of_binding(labels: &Labels) -> Vec<&str> {
    labels.iter().filter(|(k, _)| *k == "namespace" || *k == "name").map(|(_, v)| v.as_str()).collect()
}

fn render_labels(labels: &Labels) -> String {
    if labels.is_empty() {
        return String::new();
    }
    let inner: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")))
        .collect();
    format!("{{{}}}", inner.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_gauges_and_histogram() {
        let m = Metrics::default();
        m.aws_call("RegisterTargets", "success");
        m.aws_call("RegisterTargets", "success");
        m.aws_call("RegisterTargets", "Throttled");
        m.registered_targets("demo", "we\"b", Some(3));
        m.reconcile("success", Duration::from_millis(20));
        let text = m.render();
        assert!(text.contains("tgb_aws_calls_total{operation=\"RegisterTargets\",outcome=\"success\"} 2"), "{text}");
        assert!(text.contains("outcome=\"Throttled\"} 1"), "{text}");
        assert!(text.contains("tgb_registered_targets{namespace=\"demo\",name=\"we\\\"b\"} 3"), "{text}");
        assert!(text.contains("tgb_reconcile_duration_seconds_bucket{le=\"0.01\"} 0"), "{text}");
        assert!(text.contains("tgb_reconcile_duration_seconds_bucket{le=\"0.025\"} 1"), "{text}");
        assert!(text.contains("tgb_reconcile_duration_seconds_count 1"), "{text}");
        m.registered_targets("demo", "we\"b", None);
        assert!(!m.render().contains("tgb_registered_targets{"));
    }

    fn health(healthy: usize, initial: usize, missing: usize) -> HealthSummary {
        HealthSummary { desired: healthy + initial + missing, healthy, initial, missing, ..Default::default() }
    }

    #[test]
    fn binding_health_and_ready_per_state_and_gone_with_the_binding() {
        let m = Metrics::default();
        m.binding_observed("demo", "web", true, Some(&health(2, 1, 0)));
        m.binding_observed("demo", "api", false, Some(&health(0, 0, 3)));
        m.registered_targets("demo", "web", Some(3));
        let text = m.render();
        for line in [
            "tgb_binding_targets{namespace=\"demo\",name=\"web\",state=\"healthy\"} 2",
            "tgb_binding_targets{namespace=\"demo\",name=\"web\",state=\"initial\"} 1",
            "tgb_binding_targets{namespace=\"demo\",name=\"web\",state=\"unhealthy\"} 0",
            "tgb_binding_targets{namespace=\"demo\",name=\"web\",state=\"notRegistered\"} 0",
            "tgb_binding_targets{namespace=\"demo\",name=\"api\",state=\"notRegistered\"} 3",
            "tgb_binding_ready{namespace=\"demo\",name=\"web\"} 1",
            "tgb_binding_ready{namespace=\"demo\",name=\"api\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}:\n{text}");
        }
        assert_eq!(text.matches("tgb_binding_targets{").count(), 14, "seven states per binding:\n{text}");
        assert_eq!(text.matches("# TYPE tgb_binding_targets gauge").count(), 1, "{text}");

        // A failure flips Ready alone; the last health read stays.
        m.binding_ready("demo", "web", false);
        let text = m.render();
        assert!(text.contains("tgb_binding_ready{namespace=\"demo\",name=\"web\"} 0"), "{text}");
        assert!(text.contains("name=\"web\",state=\"healthy\"} 2"), "{text}");

        // Deleting one binding drops every series of it and nothing of the other.
        m.registered_targets("demo", "web", None);
        let text = m.render();
        assert!(!text.contains("name=\"web\""), "{text}");
        assert_eq!(text.matches("tgb_binding_targets{namespace=\"demo\",name=\"api\"").count(), 7, "{text}");
        assert!(text.contains("tgb_binding_ready{namespace=\"demo\",name=\"api\"} 0"), "{text}");
    }

    #[test]
    fn a_binding_named_like_a_namespace_is_not_confused_with_it() {
        let m = Metrics::default();
        m.binding_ready("a", "b", true);
        m.binding_ready("b", "a", true);
        m.registered_targets("b", "a", None);
        let text = m.render();
        assert!(text.contains("tgb_binding_ready{namespace=\"a\",name=\"b\"} 1"), "{text}");
        assert!(!text.contains("namespace=\"b\""), "{text}");
    }

    #[test]
    fn leadership_gauge_follows_the_last_transition() {
        let m = Metrics::default();
        assert!(!m.render().contains("tgb_leader "), "not set before the agent knows");
        m.leader(false);
        assert!(m.render().lines().any(|l| l == "tgb_leader 0"));
        m.leader(true);
        assert!(m.render().lines().any(|l| l == "tgb_leader 1"));
    }

    #[test]
    fn time_to_register_counts_only_reconciles_that_registered() {
        let m = Metrics::default();
        let text = m.render();
        assert!(text.contains("tgb_time_to_register_seconds_count 0"), "exported before any registration:\n{text}");
        m.time_to_register(0, Duration::from_secs(3));
        m.time_to_register(2, Duration::from_millis(700));
        m.time_to_register(1, Duration::from_secs(40));
        let text = m.render();
        assert!(text.contains("tgb_time_to_register_seconds_bucket{le=\"0.5\"} 0"), "{text}");
        assert!(text.contains("tgb_time_to_register_seconds_bucket{le=\"1\"} 1"), "{text}");
        assert!(text.contains("tgb_time_to_register_seconds_bucket{le=\"30\"} 1"), "{text}");
        assert!(text.contains("tgb_time_to_register_seconds_bucket{le=\"60\"} 2"), "{text}");
        assert!(text.contains("tgb_time_to_register_seconds_bucket{le=\"+Inf\"} 2"), "{text}");
        assert!(text.contains("tgb_time_to_register_seconds_count 2"), "{text}");
        assert!(text.contains("tgb_time_to_register_seconds_sum 40.7"), "{text}");
    }

    #[test]
    fn every_exported_family_has_help_and_one_type_line() {
        let m = Metrics::default();
        m.aws_call("DescribeTargetHealth", "success");
        m.reconcile("error", Duration::from_millis(1));
        m.reconcile_error("Throttled");
        m.targets_changed("register", 1);
        m.registered_targets("demo", "web", Some(1));
        m.binding_observed("demo", "web", true, Some(&health(1, 0, 0)));
        m.leader(true);
        m.admission("injected", Duration::from_micros(300));
        let text = m.render();
        let typed: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("# TYPE ")?.split(' ').next()).collect();
        assert_eq!(typed.len(), HELP.len(), "{text}");
        for (name, _) in HELP {
            assert_eq!(typed.iter().filter(|t| **t == name).count(), 1, "{name}:\n{text}");
            assert!(text.contains(&format!("# HELP {name} ")), "{name}:\n{text}");
        }
    }
}
