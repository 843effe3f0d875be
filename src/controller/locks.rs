use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::OwnedMutexGuard;

/// One async lock per key, so all work on one target group is serialized: two bindings of one
/// group, or a drift check racing an event, never interleave.
#[derive(Default)]
pub struct KeyedLocks {
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl KeyedLocks {
    pub async fn lock(&self, key: &str) -> OwnedMutexGuard<()> {
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
            // Drop locks nobody holds or waits for, so the map does not grow without bound.
            locks.retain(|_, l| Arc::strong_count(l) > 1);
            locks.entry(key.to_owned()).or_default().clone()
        };
        lock.lock_owned().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn same_key_is_serialized_other_keys_are_not() {
        let locks = Arc::new(KeyedLocks::default());
        let held = locks.lock("tg-a").await;
        let other = tokio::time::timeout(Duration::from_millis(50), locks.lock("tg-b")).await;
        assert!(other.is_ok(), "a different key must not wait");
        let same = tokio::time::timeout(Duration::from_millis(50), locks.lock("tg-a")).await;
        assert!(same.is_err(), "the same key must wait");
        drop(held);
        let same = tokio::time::timeout(Duration::from_millis(50), locks.lock("tg-a")).await;
        assert!(same.is_ok());
    }
}
