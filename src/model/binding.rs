use std::fmt;

/// Which binding something belongs to: its UID (stable, unique across namespaces and re-creations)
/// and its name for people.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BindingId {
    pub uid: String,
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for BindingId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}
