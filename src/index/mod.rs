//! In-memory index of the inputs of each binding, fed by narrowly scoped watches: for every
//! Service a binding references, that Service (by name) and its EndpointSlices (by the
//! `kubernetes.io/service-name` label). No cluster-wide Service, EndpointSlice or Pod cache.

mod backends;
mod views;

pub use backends::{Backend, BackendKey, BackendIndex};
pub use views::{service_view, slice_view};
