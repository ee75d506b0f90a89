//! The store's own row types: what goes in and what comes out of a [`super::JobStore`].
//! No wire types here: a job's request is opaque bytes that the caller encodes and decodes,
//! and a stream is [`Stream`]. "Not set" is `None`, never 0 or "".

use crate::state::State;

/// A job to create, with its hosts (its children, in order; all NotStarted).
#[derive(Debug, Clone)]
pub struct NewJob {
    pub instance_id: String,
    /// Empty: the store names it `Job<Id>`.
    pub name: String,
    pub command: String,
    /// "remote" or "local".
    pub location: String,
    /// What the children run, encoded by the caller (never with a password).
    pub request: Vec<u8>,
    pub throttle_limit: u32,
    pub connect_timeout_ms: u64,
    /// The error budget (`--max-errors`) as a count of hosts; `None`: none.
    pub max_errors: Option<u32>,
    pub created_at_ms: i64,
    /// Host name and port of each child.
    pub hosts: Vec<(String, u16)>,
    /// Each child's own run-as user (the inventory's or the config's for its host), by index;
    /// `None` or past the end: the request's.
    pub run_as: Vec<Option<String>>,
}

impl NewJob {
    /// Child `idx`'s own run-as user, if it has one.
    pub fn run_as_of(&self, idx: usize) -> Option<&str> {
        self.run_as.get(idx).and_then(|u| u.as_deref())
    }
}

/// A job as stored.
#[derive(Debug, Clone)]
pub struct JobRow {
    pub id: i64,
    pub instance_id: String,
    pub name: String,
    pub command: String,
    /// "remote" or "local".
    pub location: String,
    pub throttle_limit: u32,
    pub connect_timeout_ms: u64,
    /// The error budget (`--max-errors`) as a count of hosts; `None`: none.
    pub max_errors: Option<u32>,
    pub created_at_ms: i64,
    /// When its last child ended.
    pub ended_at_ms: Option<i64>,
    pub stop_requested: bool,
    pub suspended: bool,
}

/// What one claim of a job's children took ([`super::JobStore::claim`]).
#[derive(Debug, Default)]
pub struct Claimed {
    /// The children claimed, to run.
    pub children: Vec<ChildRow>,
    /// Children owned by no live daemon are left that this daemon could claim once a
    /// throttle slot is free; `false`: a child's end frees nothing another claim would take
    /// (only a lapsed lease or a changed job makes children claimable again).
    pub more: bool,
}

/// One child job (one host's run) as stored.
#[derive(Debug, Clone)]
pub struct ChildRow {
    pub idx: u32,
    pub host: String,
    pub port: u16,
    pub state: State,
    pub run_id: Option<String>,
    pub last_seq: u64,
    pub received_seq: u64,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub reason: Option<String>,
    /// How it ended (the outcome's cause name).
    pub cause: Option<String>,
    /// Marked just before its start request goes out.
    pub started_at_ms: Option<i64>,
    pub ended_at_ms: Option<i64>,
    /// Its own run-as user; `None`: the job's request's.
    pub run_as: Option<String>,
}

impl ChildRow {
    /// HasMoreData: the child is not finished (it may write more), or it has output that no
    /// consuming receive has delivered yet.
    pub fn has_more_data(&self) -> bool {
        !self.state.is_finished() || self.last_seq > self.received_seq
    }

    /// The host as users name it (`name`, or `name:port` off the default port).
    pub fn label(&self, location: &str) -> String {
        if location == "local" {
            return "localhost".to_string();
        }
        crate::hosts::Host {
            name: self.host.clone(),
            port: self.port,
        }
        .label()
    }
}

/// How a child ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildEnd {
    pub state: State,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub reason: Option<String>,
    /// The outcome's cause name.
    pub cause: Option<String>,
    pub ended_at_ms: i64,
}

/// An output stream of a child. Stored as its code (1, 2: the wire's numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub const BOTH: [Stream; 2] = [Stream::Stdout, Stream::Stderr];

    pub fn code(self) -> u8 {
        match self {
            Stream::Stdout => 1,
            Stream::Stderr => 2,
        }
    }

    /// Anything but stderr's code is stdout.
    pub fn from_code(code: i64) -> Stream {
        if code == 2 {
            Stream::Stderr
        } else {
            Stream::Stdout
        }
    }

    /// 0 for stdout, 1 for stderr: where it goes in a pair such as `[Mark; 2]`.
    pub fn index(self) -> usize {
        usize::from(self == Stream::Stderr)
    }
}

/// One output chunk to store. `seq` numbers a child's chunks over both streams.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub job_id: i64,
    pub idx: u32,
    pub seq: u64,
    pub stream: Stream,
    pub data: Vec<u8>,
}

/// One stored chunk, as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    pub seq: u64,
    pub stream: Stream,
    pub data: Vec<u8>,
}

/// A position in one stream of a child's output: that stream's chunks through `seq` whole,
/// and `off` bytes of its next chunk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Mark {
    pub seq: u64,
    pub off: u32,
}

/// A job state's code in a store (the wire's numbers).
pub fn state_code(state: State) -> i32 {
    state.to_pb() as i32
}

pub fn state_from_code(code: i32) -> State {
    State::from_pb(code)
}

/// What retention looks at in a job: its age, whether it is finished, and whether it has
/// output that no consuming receive has delivered yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionRow {
    pub id: i64,
    pub created_at_ms: i64,
    /// When its last child ended (`None` while one is still going).
    pub ended_at_ms: Option<i64>,
    /// Every child is finished.
    pub finished: bool,
    /// Some child has output no consuming receive has delivered (HasMoreData).
    pub unreceived: bool,
}
