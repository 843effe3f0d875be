//! In-memory index of the inputs of each binding, fed by narrowly scoped watches: for every
//! Service a binding references, that Service (by name) and its EndpointSlices (by the
//! `kubernetes.io/service-name` label). No cluster-wide Service, EndpointSlice or Pod cache.
//! Nodes are watched only once an instance-mode binding exists.

mod backends;
mod nodes;
mod relist;
mod views;

pub use backends::{Backend, BackendIndex, BackendKey};
pub use nodes::{NodeIndex, Nodes};
pub use relist::Views;
pub use views::{node_view, selector, service_view, slice_view};
