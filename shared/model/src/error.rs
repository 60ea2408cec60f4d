//! Errors of the record model: a bad setting or a bad input, each saying what to fix.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum Error {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("{path}: {reason}")]
    Input { path: String, reason: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error with its sources on one line, each message once (SDK errors nest their causes).
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let msg = s.to_string();
        if !text.contains(&msg) {
            text.push_str(": ");
            text.push_str(&msg);
        }
        cur = s.source();
    }
    text
}
