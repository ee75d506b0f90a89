//! The `--output json` records, one serde type each, and their JSON Schema (`rjob schema`).
//!
//! Every field a record may lack is `null`, never `""`; counts are numbers.

use std::collections::BTreeMap;

use schemars::{generate::SchemaSettings, JsonSchema, Schema, SchemaGenerator};
use serde::Serialize;

use crate::outcome::Cause;
use crate::state::State;

/// A unit enum that serializes as one fixed string: the `type` of a record.
macro_rules! tag {
    ($name:ident, $text:literal) => {
        #[doc = concat!("Always `\"", $text, "\"`.")]
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, JsonSchema)]
        pub enum $name {
            #[default]
            #[serde(rename = $text)]
            Tag,
        }
    };
}

tag!(OutputTag, "output");
tag!(ResultTag, "result");
tag!(StateTag, "state");
tag!(GroupTag, "group");
tag!(HostTag, "host");
tag!(SessionTag, "session");

/// Which stream a line came on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum StreamName {
    Stdout,
    Stderr,
}

/// One line a host's script wrote (`rjob invoke`, `rjob receive`).
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[schemars(deny_unknown_fields, transform = require_present)]
pub struct OutputRecord {
    #[serde(rename = "type")]
    pub kind: OutputTag,
    /// The job it belongs to, when a receive covers several jobs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    pub host: String,
    pub stream: StreamName,
    /// The chunk's sequence number (0 for a line finished at the end).
    pub seq: u64,
    /// The line, without its newline (invalid UTF-8 replaced by U+FFFD).
    pub data: String,
    /// The exact bytes, when the line is not valid UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_base64: Option<String>,
}

/// How a host's run ended (`rjob invoke`, `rjob receive`).
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[schemars(deny_unknown_fields, transform = require_present)]
pub struct ResultRecord {
    #[serde(rename = "type")]
    pub kind: ResultTag,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    pub host: String,
    pub state: State,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub duration_ms: u64,
    /// Why it did not complete, in one line; `null` when it completed.
    pub error: Option<String>,
    pub cause: Cause,
}

/// A host's state moved (`rjob receive --follow --output json`).
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[schemars(deny_unknown_fields, transform = require_present)]
pub struct StateRecord {
    #[serde(rename = "type")]
    pub kind: StateTag,
    pub job: String,
    pub host: String,
    pub state: State,
}

/// Hosts whose output was the same (`rjob invoke --gather --output json`).
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[schemars(deny_unknown_fields, transform = require_present)]
pub struct GroupRecord {
    #[serde(rename = "type")]
    pub kind: GroupTag,
    pub hosts: Vec<String>,
    pub folded: String,
    pub stdout: String,
    pub stderr: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stdout_base64: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stderr_base64: Option<String>,
    pub exit_codes: Vec<Option<i32>>,
}

/// One selected host (`rjob hosts --output json`).
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[schemars(deny_unknown_fields, transform = require_present)]
pub struct HostRecord {
    #[serde(rename = "type")]
    pub kind: HostTag,
    /// What is dialled, with its port when not the default.
    pub host: String,
    /// Its inventory name.
    pub name: String,
    pub address: String,
    pub port: u16,
    pub user: Option<String>,
    pub vars: BTreeMap<String, String>,
}

/// One child of a job (in [`JobRecord`]).
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[schemars(deny_unknown_fields, transform = require_present)]
pub struct ChildRecord {
    pub host: String,
    pub state: State,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub reason: Option<String>,
    pub cause: Option<String>,
    pub has_more_data: bool,
}

/// One job (`rjob jobs --output json` gives an array of them).
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[schemars(deny_unknown_fields, transform = require_present)]
pub struct JobRecord {
    pub id: u32,
    pub instance_id: String,
    pub name: String,
    pub state: State,
    pub has_more_data: bool,
    /// `remote` or `local`.
    pub location: Option<String>,
    pub command: String,
    pub throttle_limit: u32,
    /// The job's error budget (`--max-errors`), as a count of hosts; null: none.
    pub max_errors: Option<u32>,
    /// RFC 3339, UTC.
    pub created_at: Option<String>,
    pub ended_at: Option<String>,
    /// Children finished.
    pub done: usize,
    /// Children in all.
    pub total: usize,
    pub children: Vec<ChildRecord>,
}

/// What `rjob wait --output json` prints.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[schemars(deny_unknown_fields, transform = require_present)]
pub struct WaitRecord {
    pub timed_out: bool,
    pub jobs: Vec<JobRecord>,
}

/// What `rjob invoke --as-job --output json` prints.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[schemars(deny_unknown_fields, transform = require_present)]
pub struct StartedRecord {
    pub id: u32,
    pub name: String,
    pub instance_id: String,
    /// How many children (hosts) it has.
    pub children: usize,
}

/// One host of a session (in [`SessionRecord`]).
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[schemars(deny_unknown_fields, transform = require_present)]
pub struct SessionHostRecord {
    pub host: String,
    pub connected: bool,
    /// Why it is not connected; `null` when it is.
    pub reason: Option<String>,
}

/// One session of the daemon (`rjob session list --output json`, a line each;
/// `rjob session new --output json`).
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[schemars(deny_unknown_fields, transform = require_present)]
pub struct SessionRecord {
    #[serde(rename = "type")]
    pub kind: SessionTag,
    pub name: String,
    /// Kept by the daemon itself (`@connected`, agents that dialled in).
    pub builtin: bool,
    pub connected: usize,
    pub disconnected: usize,
    pub throttle_limit: u32,
    /// RFC 3339, UTC.
    pub created_at: Option<String>,
    pub age_ms: u64,
    pub hosts: Vec<SessionHostRecord>,
}

/// One certificate (`rjob pki list --output json`, a line each).
pub type CertRecord = crate::pki::fleet::Listed;

/// The fields a record leaves out when they do not apply; every other field is always
/// there (`null` when absent).
const MAY_BE_LEFT_OUT: [&str; 4] = ["job", "data_base64", "stdout_base64", "stderr_base64"];

/// Marks every property required but [`MAY_BE_LEFT_OUT`] (schemars leaves `Option` fields
/// out of `required`, though these records always write them).
fn require_present(schema: &mut Schema) {
    let names: Vec<serde_json::Value> = schema
        .get("properties")
        .and_then(serde_json::Value::as_object)
        .map(|p| {
            p.keys()
                .filter(|k| !MAY_BE_LEFT_OUT.contains(&k.as_str()))
                .map(|k| serde_json::Value::String(k.clone()))
                .collect()
        })
        .unwrap_or_default();
    schema.insert("required".into(), serde_json::Value::Array(names));
}

/// `""` as `None`.
pub fn non_empty(text: &str) -> Option<String> {
    (!text.is_empty()).then(|| text.to_owned())
}

/// The record names `rjob schema NAME` takes, with what prints them.
pub const NAMES: [(&str, &str); 10] = [
    ("output", "a line of output (invoke, receive)"),
    ("result", "how a host's run ended (invoke, receive)"),
    ("state", "a host's state moved (receive --follow)"),
    ("group", "hosts with the same output (invoke --gather)"),
    ("host", "a selected host (hosts)"),
    ("job", "a job (jobs: an array of them)"),
    ("wait", "the jobs waited for (wait)"),
    ("started", "a job started (invoke --as-job)"),
    ("certificate", "a certificate (pki list)"),
    ("session", "a session (session list, session new)"),
];

fn generator() -> SchemaGenerator {
    SchemaSettings::draft2020_12().into_generator()
}

/// The schema of one record, standing alone; `None` for an unknown name.
pub fn schema_of(name: &str) -> Option<Schema> {
    let g = generator();
    Some(match name {
        "output" => g.into_root_schema_for::<OutputRecord>(),
        "result" => g.into_root_schema_for::<ResultRecord>(),
        "state" => g.into_root_schema_for::<StateRecord>(),
        "group" => g.into_root_schema_for::<GroupRecord>(),
        "host" => g.into_root_schema_for::<HostRecord>(),
        "job" => g.into_root_schema_for::<JobRecord>(),
        "wait" => g.into_root_schema_for::<WaitRecord>(),
        "started" => g.into_root_schema_for::<StartedRecord>(),
        "certificate" => g.into_root_schema_for::<CertRecord>(),
        "session" => g.into_root_schema_for::<SessionRecord>(),
        _ => return None,
    })
}

/// Every record in one document: `$defs` holds each, and the root accepts any of them (a
/// line of `rjob jobs --output json` is an array of `JobRecord`).
pub fn schema_document() -> serde_json::Value {
    let mut g = generator();
    let refs = vec![
        g.subschema_for::<OutputRecord>(),
        g.subschema_for::<ResultRecord>(),
        g.subschema_for::<StateRecord>(),
        g.subschema_for::<GroupRecord>(),
        g.subschema_for::<HostRecord>(),
        g.subschema_for::<Vec<JobRecord>>(),
        g.subschema_for::<WaitRecord>(),
        g.subschema_for::<StartedRecord>(),
        g.subschema_for::<CertRecord>(),
        g.subschema_for::<SessionRecord>(),
    ];
    let defs: serde_json::Map<String, serde_json::Value> = g.take_definitions(true);
    serde_json::json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "rjob --output json records",
        "description": "Each line rjob prints with --output json is one of these.",
        "anyOf": refs,
        "$defs": defs,
    })
}

impl JsonSchema for Cause {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Cause".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        let names: Vec<&str> = Cause::ALL.iter().map(|c| c.name()).collect();
        schemars::json_schema!({
            "description": "Why a child ended, for programs to branch on.",
            "type": "string",
            "enum": names,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_has_a_schema_and_the_document_defines_every_record() {
        for (name, _) in NAMES {
            assert!(schema_of(name).is_some(), "{name}");
        }
        assert!(schema_of("nope").is_none());
        let doc = schema_document();
        for def in [
            "OutputRecord",
            "ResultRecord",
            "JobRecord",
            "Listed",
            "Cause",
            "State",
        ] {
            assert!(doc["$defs"][def].is_object(), "{def}: {doc}");
        }
    }

    #[test]
    fn a_tag_serializes_as_its_text() {
        assert_eq!(
            serde_json::to_string(&ResultTag::Tag).expect("serializes"),
            "\"result\""
        );
    }
}
