//! The one helper module of the integration tests (`mod common;` in each test file):
//!
//! - `env`: a temp dir with a repository path, the built binary (`Cmd`: run it, expect an
//!   exit code, parse its JSON; the test hooks, running as user `nobody`), backup and
//!   restore-and-compare, waiting for a command to reach a point, root-only tests;
//! - `fixture`: Jellyfin-shaped data dirs (also included by `examples/gen_dataset.rs`);
//! - `verify`: describing trees and databases and comparing them;
//! - `server`: the stand-in running server (`wal_server.py`, Python's own SQLite);
//! - `sqlcli`: the system `sqlite3` CLI as the outside judge of databases;
//! - `corpus`: the database corpus of `tests/corpus/` and its oracle;
//! - `s3`: a real S3-compatible server on loopback (SeaweedFS `weed mini`);
//! - `faultproxy`: a loopback HTTP proxy that injects faults between jellysnap and an S3
//!   server, and counts requests and bytes;
//! - `connectproxy`: a forward (CONNECT) proxy on loopback, as a user's network has one,
//!   that counts the requests it carried;
//! - `tls`: a TLS endpoint with a throwaway CA's certificate in front of the S3 server.
//!
//! Each test binary uses a part of it.
#![allow(dead_code)]

pub mod connectproxy;
pub mod corpus;
pub mod env;
pub mod faultproxy;
pub mod fixture;
pub mod s3;
pub mod server;
pub mod sqlcli;
pub mod tls;
pub mod verify;
