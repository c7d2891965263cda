//! The score cache: raw logits of pairs already scored, in an LRU, so a pair
//! seen again (pagination, retries, several agents asking the same question,
//! the same FAQ passages) skips the forward pass and, in the server, the queue.
//!
//! A logit is a function of the model and of the pair's token ids alone, so
//! a cached one is the computed one, bit for bit. The key is a 128-bit hash of
//! a [`Scope`] (the model's identity, dtype, implementation and the truncation
//! settings) and the pair's ids (query and passage with the special tokens,
//! after truncation): one cache can be shared by several models or options
//! without an answer crossing from one to another. 128 bits make an
//! accidental collision negligible (about n²/2¹²⁹ for n entries); the hash
//! keys are random per process, so keys cannot be aimed at one another.
//!
//! The `lru` crate holds the entries: a hash map and a linked list, O(1) per
//! look-up and insert, evicting the least recently used; one mutex around it
//! is held for a look-up or an insert of one pair, far below a forward pass.

use std::hash::{BuildHasher, Hash, RandomState};
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use lru::LruCache;

use crate::tokenize::TruncationParams;

/// What a cached logit depends on besides the pair's ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Scope(u128);

/// A pair's key: its [`Scope`] and token ids, hashed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key(u128);

/// Counters and sizes of a [`ScoreCache`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CacheStats {
    /// Most entries held.
    pub capacity: usize,
    pub entries: usize,
    /// Estimated memory of the entries and the map's slots (see [`ENTRY_BYTES`]).
    pub bytes: usize,
    pub hits: u64,
    pub misses: u64,
    /// Entries pushed out to make room.
    pub evictions: u64,
}

/// Estimated bytes per entry: the list node (key, logit, two pointers), its
/// heap block's overhead, and a map slot (a pointer pair and a control byte at
/// hashbrown's 7/8 load). Measured memory is what matters; this is what the
/// metrics and `/info` report as `bytes`.
pub const ENTRY_BYTES: usize = 48 + 16 + 19;

/// An LRU of raw logits; see the module docs.
pub struct ScoreCache {
    entries: Mutex<LruCache<Key, f32>>,
    capacity: NonZeroUsize,
    hasher: (RandomState, RandomState),
    hits: AtomicU64,
    misses: AtomicU64,
    evictions: AtomicU64,
}

impl ScoreCache {
    /// A cache of at most `capacity` pairs; `None` for 0 (off).
    pub fn new(capacity: usize) -> Option<Self> {
        let capacity = NonZeroUsize::new(capacity)?;
        Some(Self {
            entries: Mutex::new(LruCache::new(capacity)),
            capacity,
            hasher: (RandomState::new(), RandomState::new()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
        })
    }

    fn lock(&self) -> MutexGuard<'_, LruCache<Key, f32>> {
        // Nothing panics while the lock is held; recover rather than cascade.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn hash128(&self, value: &impl Hash) -> u128 {
        let (a, b) = (self.hasher.0.hash_one(value), self.hasher.1.hash_one(value));
        (u128::from(a) << 64) | u128::from(b)
    }

    /// The scope of one model under one set of truncation settings.
    /// `model` names the weights (path, size, modification time, or any
    /// unique name), the dtype and the implementation: see
    /// [`crate::Reranker::cache_identity`].
    pub fn scope(&self, model: &str, truncation: &TruncationParams) -> Scope {
        let TruncationParams {
            max_length,
            strategy,
            query_max_length,
            side,
        } = truncation;
        Scope(self.hash128(&(
            model,
            max_length,
            format!("{strategy:?}"),
            query_max_length,
            format!("{side:?}"),
        )))
    }

    /// The key of one tokenized pair.
    pub fn key(&self, scope: Scope, ids: &[u32]) -> Key {
        Key(self.hash128(&(scope.0, ids)))
    }

    /// The cached logit, counting a hit or a miss.
    pub fn get(&self, key: Key) -> Option<f32> {
        let found = self.lock().get(&key).copied();
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// Caches a computed logit (the least recently used entry makes room).
    pub fn put(&self, key: Key, logit: f32) {
        let pushed = self.lock().push(key, logit);
        // `push` also returns the old value when the key was there already.
        if pushed.is_some_and(|(old, _)| old != key) {
            self.evictions.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Looks up every pair: the logits found and the positions of the misses.
    pub fn get_all<P: AsRef<[u32]>>(
        &self,
        scope: Scope,
        pairs: &[P],
    ) -> (Vec<Option<f32>>, Vec<usize>) {
        let found: Vec<Option<f32>> = pairs
            .iter()
            .map(|p| self.get(self.key(scope, p.as_ref())))
            .collect();
        let misses = (0..pairs.len()).filter(|&i| found[i].is_none()).collect();
        (found, misses)
    }

    pub fn stats(&self) -> CacheStats {
        let entries = self.lock().len();
        CacheStats {
            capacity: self.capacity.get(),
            entries,
            bytes: entries * ENTRY_BYTES,
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
        }
    }
}

impl std::fmt::Debug for ScoreCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScoreCache")
            .field("stats", &self.stats())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenize::{Side, Truncation};

    fn params(max_length: usize, side: Side) -> TruncationParams {
        TruncationParams {
            max_length,
            strategy: Truncation::LongestFirst,
            query_max_length: max_length / 2,
            side,
        }
    }

    #[test]
    fn zero_is_off() {
        assert!(ScoreCache::new(0).is_none());
    }

    #[test]
    fn evicts_the_least_recently_used_and_counts() {
        let cache = ScoreCache::new(2).unwrap();
        let s = cache.scope("m", &params(128, Side::Right));
        let (a, b, c) = (
            cache.key(s, &[1, 2]),
            cache.key(s, &[1, 3]),
            cache.key(s, &[2, 1]),
        );
        cache.put(a, 1.0);
        cache.put(b, 2.0);
        assert_eq!(cache.get(a), Some(1.0)); // a is now the most recent
        cache.put(c, 3.0); // pushes b out
        cache.put(c, 3.0); // an update, not an eviction
        assert_eq!(cache.get(b), None);
        assert_eq!(cache.get(c), Some(3.0));
        let st = cache.stats();
        assert_eq!(
            (st.entries, st.hits, st.misses, st.evictions),
            (2, 2, 1, 1),
            "{st:?}"
        );
        assert_eq!(st.bytes, 2 * ENTRY_BYTES);
    }

    #[test]
    fn scopes_differ_by_model_and_every_setting() {
        let cache = ScoreCache::new(8).unwrap();
        let base = params(128, Side::Right);
        let scopes = [
            cache.scope("m", &base),
            cache.scope("m2", &base),
            cache.scope("m", &params(64, Side::Right)),
            cache.scope("m", &params(128, Side::Left)),
            cache.scope(
                "m",
                &TruncationParams {
                    strategy: Truncation::OnlySecond,
                    ..base
                },
            ),
            cache.scope(
                "m",
                &TruncationParams {
                    query_max_length: 3,
                    ..base
                },
            ),
        ];
        for (i, a) in scopes.iter().enumerate() {
            for b in &scopes[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert_eq!(scopes[0], cache.scope("m", &base));
        // The same ids under two scopes are two entries.
        cache.put(cache.key(scopes[0], &[5, 6]), 1.0);
        assert_eq!(cache.get(cache.key(scopes[1], &[5, 6])), None);
        assert_eq!(cache.get(cache.key(scopes[0], &[5, 6])), Some(1.0));
    }
}
