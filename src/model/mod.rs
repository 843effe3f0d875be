//! Plain data shared by every layer: no Kubernetes or AWS types here.

mod account;
mod binding;
mod cidr;
pub mod sg_rule;
mod target;
mod target_group;

pub use account::{Account, AssumeRole, arn_account, role_account};
pub use binding::BindingId;
pub use cidr::Cidr;
pub use target::*;
pub use target_group::*;
