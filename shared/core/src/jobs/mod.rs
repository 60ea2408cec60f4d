//! What a function or command runs: each job takes typed configuration and clients from its
//! caller (a Lambda's `main` or the CLI) and uses the layers below.

pub mod config;
pub mod forget;
pub mod handlers;
pub mod maintenance;
pub mod replay;

#[cfg(test)]
mod kinesis_tests;
