//! Pure decisions: what the target group should hold and how to get there. Nothing here does I/O;
//! every function is a function of plain data, tested exhaustively.

pub mod binding;
pub mod decide;
pub mod desired;
pub mod gates;
pub mod health;
pub mod inject;
pub mod instance;
pub mod lost_record;
pub mod outcome;
pub mod ownership;
pub mod sg_rules;
pub mod status;
pub mod validate;
pub mod wanted;
