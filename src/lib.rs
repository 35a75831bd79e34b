//! placeholder
#![allow(missing_docs)]
pub mod buffer;
pub mod config;
pub mod connection;
pub mod service;
pub mod stats;
pub mod timer;
