//! Prometheus metrics, rendered in the text exposition format.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

const DURATION_BUCKETS: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

type Labels = Vec<(&'static str, String)>;

#[derive(Default)]
struct Families {
    counters: BTreeMap<(&'static str, Labels), u64>,
    gauges: BTreeMap<(&'static str, Labels), i64>,
    /// Reconcile duration histogram: bucket counts, sum, count.
    durations: ([u64; DURATION_BUCKETS.len()], f64, u64),
}

/// The agent's metrics. Cheap to update from any task.
#[derive(Default)]
pub struct Metrics {
    families: Mutex<Families>,
}

impl Metrics {
    fn with<T>(&self, f: impl FnOnce(&mut Families) -> T) -> T {
        // Metrics must never take the agent down; a poisoned lock still holds valid numbers.
        f(&mut self.families.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn inc(&self, name: &'static str, labels: Labels, by: u64) {
        self.with(|f| *f.counters.entry((name, labels)).or_default() += by);
    }

    pub fn aws_call(&self, operation: &'static str, outcome: &str) {
        self.inc("tgb_aws_calls_total", vec![("operation", operation.into()), ("outcome", outcome.into())], 1);
    }

    pub fn reconcile(&self, outcome: &str, took: Duration) {
        self.inc("tgb_reconciles_total", vec![("outcome", outcome.into())], 1);
        let secs = took.as_secs_f64();
        self.with(|f| {
            for (bucket, le) in f.durations.0.iter_mut().zip(DURATION_BUCKETS) {
                if secs <= le {
                    *bucket += 1;
                }
            }
            f.durations.1 += secs;
            f.durations.2 += 1;
        });
    }

    pub fn reconcile_error(&self, reason: &str) {
        self.inc("tgb_reconcile_errors_total", vec![("reason", reason.into())], 1);
    }

    pub fn targets_changed(&self, direction: &'static str, count: usize) {
        self.inc("tgb_target_changes_total", vec![("direction", direction.into())], count as u64);
    }

    pub fn registered_targets(&self, namespace: &str, name: &str, count: Option<usize>) {
        let key = ("tgb_registered_targets", vec![("namespace", namespace.into()), ("name", name.into())]);
        self.with(|f| match count {
            Some(count) => {
                f.gauges.insert(key, i64::try_from(count).unwrap_or(i64::MAX));
            }
            None => {
                f.gauges.remove(&key);
            }
        });
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        self.with(|f| {
            let mut out = String::new();
            let mut last = "";
            for ((name, labels), value) in &f.counters {
                if *name != last {
                    let _ = writeln!(out, "# TYPE {name} counter");
                    last = name;
                }
                let _ = writeln!(out, "{name}{} {value}", render_labels(labels));
            }
            for ((name, labels), value) in &f.gauges {
                if *name != last {
                    let _ = writeln!(out, "# TYPE {name} gauge");
                    last = name;
                }
                let _ = writeln!(out, "{name}{} {value}", render_labels(labels));
            }
            let (buckets, sum, count) = &f.durations;
            let _ = writeln!(out, "# TYPE tgb_reconcile_duration_seconds histogram");
            for (le, n) in DURATION_BUCKETS.iter().zip(buckets) {
                let _ = writeln!(out, "tgb_reconcile_duration_seconds_bucket{{le=\"{le}\"}} {n}");
            }
            let _ = writeln!(out, "tgb_reconcile_duration_seconds_bucket{{le=\"+Inf\"}} {count}");
            let _ = writeln!(out, "tgb_reconcile_duration_seconds_sum {sum}");
            let _ = writeln!(out, "tgb_reconcile_duration_seconds_count {count}");
            out
        })
    }
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
}
