//! tgb-agent: keeps the targets of Terraform-owned AWS target groups in sync with Kubernetes.
//!
//! Flow: `k8s` watches feed the `index`; `plan` decides (pure functions); `aws` applies; the
//! `controller` orchestrates and reports through status conditions, Events and `metrics`. The
//! `webhook` injects readiness gates into new pods, on every replica.

pub mod api;
pub mod aws;
pub mod cli;
pub mod clock;
pub mod controller;
pub mod fence;
pub mod health;
pub mod index;
pub mod k8s;
pub mod metrics;
pub mod model;
pub mod plan;
pub mod server;
pub mod webhook;
