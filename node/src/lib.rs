//! The ringkv node: a leaderless, Dynamo-style replica.
#![warn(missing_docs)]

pub mod error;
pub mod record;
pub mod storage;
pub mod version;

pub use error::{Error, Result};
