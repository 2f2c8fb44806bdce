//! The subcommands other than `serve`.

pub mod admin;
pub mod check;
pub mod keys;
pub mod migrate;
pub mod validate;
