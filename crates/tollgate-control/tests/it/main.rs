//! Integration tests of the control plane against real databases: a SQLite file and a
//! database of its own on the test PostgreSQL server, for every test.

mod access;
mod follow;
mod migrations;
mod outbox;
mod service;
mod support;
mod tls;
mod tokens;
