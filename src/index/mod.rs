//! In-memory index of the inputs of each binding: one Service watch and one EndpointSlice watch
//! (cluster-wide, or in the watched namespace), filtered on receipt to the Services bindings
//! reference and their slices (`kubernetes.io/service-name` label), kept as plain views. The
//! number of watch streams does not grow with bindings; nothing else is cached. Nodes are watched
//! only once an instance-mode binding exists.

mod backends;
mod nodes;
mod relist;
mod store;
mod views;
mod wake;

pub use backends::{Backend, BackendIndex};
pub use nodes::{NodeIndex, Nodes};
pub use relist::Views;
pub use store::BackendKey;
pub use views::{node_view, selector, service_view, slice_view};
pub use wake::Wake;
