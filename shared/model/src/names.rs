//! Names derived from the pipeline id (contract §1, §4, §5): never hard-coded elsewhere.

use crate::error::{Error, Result};

/// The three record kinds that make up one Pinterest post.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Pin,
    Geo,
    User,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Pin, Kind::Geo, Kind::User];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Pin => "pin",
            Kind::Geo => "geo",
            Kind::User => "user",
        }
    }

    /// Kind of a topic (`<ID>.pin`), stream (`streaming-<ID>-pin`) or file stem (`pin`):
    /// the last `.`/`-`/`_`-separated word decides.
    pub fn from_source_name(name: &str) -> Option<Kind> {
        let last = name.rsplit(['.', '-', '_', '/']).next().unwrap_or(name);
        match last {
            "pin" => Some(Kind::Pin),
            "geo" => Some(Kind::Geo),
            "user" => Some(Kind::User),
            _ => None,
        }
    }
}

/// A validated pipeline id plus every name derived from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipelineId(String);

impl PipelineId {
    /// Ids become topic, stream and table names, so only characters safe in all three pass.
    pub fn new(id: &str) -> Result<Self> {
        let ok = !id.is_empty()
            && id.len() <= 64
            && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if ok {
            Ok(PipelineId(id.to_string()))
        } else {
            Err(Error::Config(format!(
                "pipeline id {id:?} must be 1-64 characters of [A-Za-z0-9_-] (for example 121ca9f7ce2b)"
            )))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    pub fn topic(&self, kind: Kind) -> String {
        format!("{}.{}", self.0, kind.as_str())
    }
    pub fn stream(&self, kind: Kind) -> String {
        format!("streaming-{}-{}", self.0, kind.as_str())
    }
    pub fn table(&self, kind: Kind) -> String {
        format!("{}_{}_table", self.0, kind.as_str())
    }
    pub fn quarantine_table(&self) -> String {
        format!("{}_quarantine", self.0)
    }
    pub fn output_table(&self, output: &str) -> String {
        format!("{}_{}", self.0, output)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_from_names() {
        assert_eq!(Kind::from_source_name("121ca9f7ce2b.pin"), Some(Kind::Pin));
        assert_eq!(Kind::from_source_name("streaming-121ca9f7ce2b-geo"), Some(Kind::Geo));
        assert_eq!(Kind::from_source_name("user"), Some(Kind::User));
        assert_eq!(Kind::from_source_name("pins"), None);
    }

    #[test]
    fn ids_are_checked() {
        assert!(PipelineId::new("121ca9f7ce2b").is_ok());
        assert!(PipelineId::new("").is_err());
        assert!(PipelineId::new("a b").is_err());
        let id = PipelineId::new("demo").unwrap();
        assert_eq!(id.table(Kind::Pin), "demo_pin_table");
        assert_eq!(id.stream(Kind::User), "streaming-demo-user");
        assert_eq!(id.quarantine_table(), "demo_quarantine");
    }
}
