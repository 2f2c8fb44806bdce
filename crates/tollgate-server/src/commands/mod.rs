//! The subcommands other than `serve`.

pub mod admin;
pub mod bench;
pub mod check;
pub mod events;
pub mod keys;
pub mod migrate;
pub mod validate;
