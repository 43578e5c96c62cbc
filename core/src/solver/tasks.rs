//! What the solver counts and serialises: live vertex tasks ([`TaskCount`]) and the per-key
//! dedup locks ([`KeyLocks`]).

use std::collections::HashMap;
use std::sync::Arc;

/// Counts live vertex tasks so callers can wait until a cancelled solve has cleaned up.
#[derive(Debug, Default)]
pub(crate) struct TaskCount {
    n: std::sync::atomic::AtomicUsize,
    idle: tokio::sync::Notify,
}

/// Held by a vertex task; dropped last when the task finishes or is aborted.
pub(crate) struct TaskToken(Arc<TaskCount>);

impl TaskCount {
    /// Returns once no token is alive.
    pub async fn wait_idle(&self) {
        loop {
            let notified = self.idle.notified();
            if self.n.load(std::sync::atomic::Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }

    pub fn token(self: &Arc<Self>) -> TaskToken {
        self.n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        TaskToken(self.clone())
    }
}

impl Drop for TaskToken {
    fn drop(&mut self) {
        if self.0.n.fetch_sub(1, std::sync::atomic::Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// Per-key async locks (dedup of identical vertices across solves). An entry lives exactly as
/// long as a [`KeyLockHandle`] for its key does: the last handle dropped removes it, so the map
/// holds only keys in use and every operation is O(1) however many keys are held at once (a
/// 200,000-op chain holds one per op while it waits for its inputs).
#[derive(Debug, Default)]
pub(crate) struct KeyLocks {
    map: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl KeyLocks {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<tokio::sync::Mutex<()>>>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A handle on `key`'s lock (created on first use). Every clone and drop of the shared
    /// `Arc`s happens under the map's mutex, so the strong count seen there is exact.
    pub fn handle(&self, key: &str) -> KeyLockHandle<'_> {
        let lock = self.map().entry(key.to_owned()).or_default().clone();
        KeyLockHandle { locks: self, key: key.to_owned(), lock }
    }

    /// Keys with a live handle (leak checks).
    #[cfg(any(test, feature = "test-support"))]
    pub fn len(&self) -> usize {
        self.map().len()
    }
}

/// A reference to one key's lock; see [`KeyLocks`].
#[derive(Debug)]
pub(crate) struct KeyLockHandle<'a> {
    locks: &'a KeyLocks,
    key: String,
    lock: Arc<tokio::sync::Mutex<()>>,
}

impl KeyLockHandle<'_> {
    /// Waits for the key's lock.
    pub async fn lock(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.lock.lock().await
    }
}

impl Drop for KeyLockHandle<'_> {
    fn drop(&mut self) {
        let mut m = self.locks.map();
        // Taken out (leaving a private placeholder) so our reference is released under the mutex.
        let l = std::mem::take(&mut self.lock);
        // Ours and the map's: we are the last handle.
        if Arc::strong_count(&l) == 2 && m.get(&self.key).is_some_and(|cur| Arc::ptr_eq(cur, &l)) {
            m.remove(&self.key);
        }
        drop(l);
    }
}

#[cfg(test)]
mod key_lock_tests {
    use super::KeyLocks;
    use std::sync::Arc;

    #[test]
    fn entries_live_as_long_as_their_handles() {
        let locks = KeyLocks::default();
        let a = locks.handle("k");
        let b = locks.handle("k");
        assert_eq!(locks.len(), 1);
        drop(a);
        assert_eq!(locks.len(), 1, "b still holds k");
        drop(b);
        assert_eq!(locks.len(), 0);
    }

    #[test]
    fn many_held_keys_stay_linear() {
        // 200,000 keys held at once (a 200,000-op chain): each handle is O(1); the old map rescanned
        // every entry on each call once 4,096 were held.
        let locks = KeyLocks::default();
        let handles: Vec<_> = (0..200_000).map(|i| locks.handle(&format!("w/{i}"))).collect();
        assert_eq!(locks.len(), 200_000);
        drop(handles);
        assert_eq!(locks.len(), 0);
    }

    #[test]
    fn serialises_and_cleans_up_under_concurrency() {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_all().build().expect("runtime");
        let locks = Arc::new(KeyLocks::default());
        let inside = Arc::new(AtomicUsize::new(0));
        let busy: Arc<Vec<AtomicBool>> = Arc::new((0..8).map(|_| AtomicBool::new(false)).collect());
        rt.block_on(async {
            let mut tasks = Vec::new();
            for t in 0..64 {
                let (locks, inside, busy) = (locks.clone(), inside.clone(), busy.clone());
                tasks.push(tokio::spawn(async move {
                    for i in 0..200 {
                        let k = (t + i) % 8;
                        let h = locks.handle(&format!("k{k}"));
                        let _g = h.lock().await;
                        assert!(!busy[k].swap(true, Ordering::SeqCst), "two holders of k{k} at once");
                        inside.fetch_add(1, Ordering::SeqCst);
                        tokio::task::yield_now().await;
                        busy[k].store(false, Ordering::SeqCst);
                    }
                }));
            }
            for t in tasks {
                assert!(t.await.is_ok());
            }
        });
        assert_eq!(inside.load(Ordering::SeqCst), 64 * 200);
        assert_eq!(locks.len(), 0, "every entry removed with its last handle");
    }
}
