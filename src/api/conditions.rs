//! The `Ready` condition and the reasons it carries.
