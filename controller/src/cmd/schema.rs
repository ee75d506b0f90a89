//! `rjob schema [RECORD]`: the JSON Schema of the `--output json` records.

use crate::records::{schema_document, schema_of, NAMES};
use crate::UsageError;

/// Prints every record's schema in one document, or the named record's alone.
pub fn run(record: Option<&str>) -> anyhow::Result<u8> {
    let text = match record {
        None => serde_json::to_string_pretty(&schema_document())?,
        Some(name) => match schema_of(name) {
            Some(schema) => serde_json::to_string_pretty(&schema)?,
            None => {
                let names: Vec<&str> = NAMES.iter().map(|(n, _)| *n).collect();
                return Err(UsageError(format!(
                    "no record named {:?}: give one of {}, or no name for them all",
                    crate::escape::text(name),
                    names.join(", ")
                ))
                .into());
            }
        },
    };
    super::stdout::Out::new().line(&text)?;
    Ok(0)
}
