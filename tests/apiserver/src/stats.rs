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
    /// The same, per resource (labelled as in `by_resource`); resources with none are left out.
    pub open_watches_by_resource: BTreeMap<String, u64>,
    /// The most watch connections open at once since start or the last reset.
    pub peak_open_watches: u64,
    pub injected_faults: u64,
}

impl Stats {
    pub fn record(&mut self, verb: &str, resource: &str) {
        self.total += 1;
        *self.by_verb.entry(verb.to_string()).or_default() += 1;
        *self.by_resource.entry(resource.to_string()).or_default().entry(verb.to_string()).or_default() += 1;
    }

    pub fn watch_opened(&mut self, resource: &str) {
        self.open_watches += 1;
        self.peak_open_watches = self.peak_open_watches.max(self.open_watches);
        *self.open_watches_by_resource.entry(resource.to_string()).or_default() += 1;
    }

    pub fn watch_closed(&mut self, resource: &str) {
        self.open_watches = self.open_watches.saturating_sub(1);
        if let Some(open) = self.open_watches_by_resource.get_mut(resource) {
            *open = open.saturating_sub(1);
            if *open == 0 {
                self.open_watches_by_resource.remove(resource);
            }
        }
    }

    /// Clears the counters; what is open stays, and the peak starts from it.
    pub fn reset(&mut self) {
        let open = std::mem::take(&mut self.open_watches_by_resource);
        *self = Stats {
            open_watches: self.open_watches,
            peak_open_watches: self.open_watches,
            open_watches_by_resource: open,
            ..Stats::default()
        };
    }
}
