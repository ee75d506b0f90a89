//! What a store shared by several daemons adds to the trait: the changes the others make,
//! heard as [`Notice`]s ([`super::JobStore::subscribe`]), and a job's consuming receive
//! claimed across every daemon ([`ReceiveClaim`], [`super::JobStore::claim_receive`]). A
//! store only one daemon uses (SQLite) hears nothing and claims locally, where the daemon's
//! own bookkeeping already keeps a receive exclusive.

/// What another daemon sharing the store changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// These jobs' children or output changed.
    Changed(Vec<i64>),
    /// Job `0`'s stop or suspend flag changed (read the job again for them).
    Flags(i64),
    /// Job `0` was removed.
    Removed(i64),
    /// These jobs are new: their children are there to claim.
    Claimable(Vec<i64>),
    /// Notices may have been missed (the store's connection was lost, and is back): any job
    /// may have changed.
    Resync,
}

/// Lets a held claim go.
#[async_trait::async_trait]
pub trait Release: Send + Sync {
    /// Lets the claim go now (dropping it lets it go too, a moment later).
    async fn release(self: Box<Self>);

    /// Whether the claim is still held, taking it again first when what held it was lost
    /// (the store restarted): false when another receive has it now.
    async fn keep(&mut self) -> bool {
        true
    }
}

/// A job's consuming receive, held across every daemon sharing the store until it is
/// released or dropped.
pub struct ReceiveClaim(Option<Box<dyn Release>>);

impl ReceiveClaim {
    /// A claim with nothing to hold outside the daemon (one daemon on its store).
    pub fn local() -> ReceiveClaim {
        ReceiveClaim(None)
    }

    /// A claim that `held` lets go.
    pub fn held(held: Box<dyn Release>) -> ReceiveClaim {
        ReceiveClaim(Some(held))
    }

    /// Whether the claim is still held ([`Release::keep`]); a local claim always is.
    pub async fn keep(&mut self) -> bool {
        match &mut self.0 {
            Some(held) => held.keep().await,
            None => true,
        }
    }

    /// Lets the claim go before returning, so that the next receive finds the job free.
    pub async fn release(mut self) {
        if let Some(held) = self.0.take() {
            held.release().await;
        }
    }
}
