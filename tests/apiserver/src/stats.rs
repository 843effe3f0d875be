//! Request counters served at `GET /_double/stats`.

use std::collections::BTreeMap;

use serde::Serialize;

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    pub total: u64,
    pub by_verb: BTreeMap<String, u64>,
    /// resource (`configmaps`, `targetgroupbindings.elbv2.k8s.aws`, `pods/status`, or `discovery`)
    /// -> verb -> count.
    pub by_resource: BTreeMap<String, BTreeMap<String, u64>>,
    /// Watch connections currently open.
    pub open_watches: u64,
    pub injected_faults: u64,
}

impl Stats {
    pub fn record(&mut self, verb: &str, resource: &str) {
        self.total += 1;
        *self.by_verb.entry(verb.to_string()).or_default() += 1;
        *self.by_resource.entry(resource.to_string()).or_default().entry(verb.to_string()).or_default() += 1;
    }

    pub fn reset(&mut self) {
        let open = self.open_watches;
        *self = Stats { open_watches: open, ..Stats::default() };
    }
}
