//! A child's throttle slot (`--throttle-limit`): held while the child has a run going, given
//! back while it waits at a busy agent (so that the hosts behind it in the queue can start),
//! and taken again, in queue order, before it tries once more.

use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub struct Slot {
    throttle: Arc<Semaphore>,
    permit: Mutex<Option<OwnedSemaphorePermit>>,
}

impl Slot {
    /// A slot of `throttle`, held with `permit`.
    pub fn new(throttle: Arc<Semaphore>, permit: OwnedSemaphorePermit) -> Slot {
        Slot {
            throttle,
            permit: Mutex::new(Some(permit)),
        }
    }

    fn permit(&self) -> std::sync::MutexGuard<'_, Option<OwnedSemaphorePermit>> {
        self.permit.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Gives the slot back (while the child waits).
    pub fn release(&self) {
        self.permit().take();
    }

    /// Takes a slot again, waiting for one if need be.
    pub async fn reclaim(&self) {
        if self.permit().is_some() {
            return;
        }
        if let Ok(permit) = self.throttle.clone().acquire_owned().await {
            *self.permit() = Some(permit);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_released_slot_lets_the_next_one_in_and_is_taken_back_in_turn() {
        let throttle = Arc::new(Semaphore::new(1));
        let permit = throttle.clone().acquire_owned().await.expect("permit");
        let slot = Slot::new(throttle.clone(), permit);
        assert_eq!(throttle.available_permits(), 0);
        slot.release();
        let other = throttle.clone().try_acquire_owned().expect("the freed slot");
        {
            let reclaiming = slot.reclaim();
            tokio::pin!(reclaiming);
            assert!(futures::poll!(&mut reclaiming).is_pending(), "waits for a slot");
            drop(other);
            reclaiming.await;
        }
        assert_eq!(throttle.available_permits(), 0);
        slot.reclaim().await; // already held: no second slot
        drop(slot);
        assert_eq!(throttle.available_permits(), 1);
    }
}
