//! Thin Kubernetes adapters: status, events, the finalizer (with the binding writes port), ownership
//! records, live reads, pods.

pub mod events;
pub mod finalizer;
pub mod install;
pub mod leader;
pub mod live;
pub mod ownership;
pub mod pods;
pub mod status;
pub mod writes;
