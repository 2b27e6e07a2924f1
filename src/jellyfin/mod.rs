//! Everything jellysnap knows about Jellyfin: layouts, components, database capture,
//! server version and whether a server is running.

pub mod capture;
pub mod datalock;
pub mod dbconfig;
pub mod dbstate;
pub mod install;
pub mod installed;
pub mod kept;
pub mod layout;
pub mod livedb;
pub mod logical;
pub mod observe;
pub mod releases;
pub mod rowlist;
pub mod running;
pub mod server;
pub mod sqlite;
pub mod version;

pub use layout::{detect, Class, LeftOutWhy, Selection, Source, SourceOptions};
