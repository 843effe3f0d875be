//! An in-memory Kubernetes API server for tests: kube-rs and kubectl talk to it like to a real
//! cluster (discovery, CRUD, list/watch, patches, status subresources, finalizers, CRDs with schema
//! validation, server-side printing), with fault injection and request statistics for reliability
//! tests. See README.md for the exact scope and approximations.

mod api;
mod cel;
mod control;
mod crd;
mod discovery;
mod error;
mod events;
mod faults;
mod jsonpath;
mod lifecycle;
mod meta;
mod negotiate;
mod openapi;
mod patch;
mod protobuf;
mod rbac;
mod registry;
mod routes;
mod schema;
mod selector;
mod server;
mod stats;
mod store;
mod table;
mod time;
mod validation;
mod watch;

pub use faults::{FailRequests, FaultRequest};
pub use server::{Config, INITIAL_NAMESPACES, RunningServer, Server, serve, serve_with_shutdown};
pub use stats::Stats;
