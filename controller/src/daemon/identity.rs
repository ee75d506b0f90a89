//! The daemon's controller identity: loaded at its start, or, when it was missing then, as
//! soon as it exists (the next time a remote job needs it), with no restart.

use std::path::PathBuf;
use std::sync::RwLock;

use crate::connect::{IdentityError, Tls};

pub struct Identity {
    /// Where it is looked for; `None`: nowhere to look (no HOME and no flag).
    dir: Option<PathBuf>,
    tls: RwLock<Option<Tls>>,
}

impl Identity {
    pub fn new(dir: Option<PathBuf>, tls: Option<Tls>) -> Identity {
        Identity {
            dir,
            tls: RwLock::new(tls),
        }
    }

    /// The identity, loaded now if it was missing until now.
    pub fn get(&self) -> Result<Tls, IdentityError> {
        if let Some(tls) = self.tls.read().unwrap_or_else(|p| p.into_inner()).as_ref() {
            return Ok(tls.clone());
        }
        let dir = self.dir.as_ref().ok_or(IdentityError::NoHome)?;
        let tls = Tls::load(dir)?;
        tracing::info!(dir = %dir.display(), "controller identity loaded: remote jobs can run");
        *self.tls.write().unwrap_or_else(|p| p.into_inner()) = Some(tls.clone());
        Ok(tls)
    }

    /// Whether it is loaded (trying to load it first).
    pub fn loaded(&self) -> bool {
        self.get().is_ok()
    }

    /// Why a remote job cannot start: what is missing or wrong, and the one step that fixes
    /// it (never a step already done, never a restart).
    pub fn missing(&self, error: &IdentityError) -> String {
        format!("the daemon has no controller identity: {error}; the daemon loads it as soon as it is there")
    }
}
