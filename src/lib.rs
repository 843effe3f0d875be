//! tgb-agent: keeps the targets of Terraform-owned AWS target groups in sync with Kubernetes.
//!
//! Flow: `k8s` (watch) → `index` → `plan` (pure decisions) → `aws` (apply) → status and events,
//! orchestrated by `controller`.

pub mod api;
pub mod aws;
pub mod metrics;
pub mod model;
pub mod plan;
