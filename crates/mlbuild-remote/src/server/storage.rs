//! The server's directory and its LRU size bound.
//!
//! Layout: `DIR/cas/<blake3 hex>`, `DIR/ac/<key hex>` (the URL paths, so an operator can
//! read the cache with `ls`) and `DIR/tmp/` for uploads in flight, renamed into place only
//! once verified. The LRU order lives in memory, seeded from file modification times at
//! start; files that appear behind the server's back are adopted when first requested.
//! Main type: [`Storage`].

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use mlbuild_digest::Digest;

use crate::wire::{parse_key, Kind};

type Id = (Kind, Digest);

#[derive(Default)]
struct Lru {
    /// id -> (size, tick of last use)
    entries: HashMap<Id, (u64, u64)>,
    /// tick -> id, oldest first
    order: BTreeMap<u64, Id>,
    next_tick: u64,
    total: u64,
}

impl Lru {
    fn touch(&mut self, id: Id, size: u64) {
        let tick = self.next_tick;
        self.next_tick += 1;
        if let Some((old_size, old_tick)) = self.entries.insert(id, (size, tick)) {
            self.order.remove(&old_tick);
            self.total -= old_size;
        }
        self.order.insert(tick, id);
        self.total += size;
    }

    fn remove(&mut self, id: &Id) -> Option<u64> {
        let (size, tick) = self.entries.remove(id)?;
        self.order.remove(&tick);
        self.total -= size;
        Some(size)
    }
}

/// Counts per kind, for `/status` and `/metrics`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Usage {
    pub cas_entries: u64,
    pub ac_entries: u64,
    pub bytes: u64,
}

pub struct Storage {
    root: PathBuf,
    max_size: u64,
    lru: Mutex<Lru>,
    tmp_counter: AtomicU64,
}

impl Storage {
    /// Opens (creating) `root` and indexes what it holds, oldest modification first.
    pub fn open(root: &Path, max_size: u64) -> std::io::Result<Storage> {
        for kind in Kind::ALL {
            std::fs::create_dir_all(root.join(kind.as_str()))?;
        }
        let tmp = root.join("tmp");
        // Uploads that were in flight when a previous server stopped.
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp)?;
        let mut found = Vec::new();
        for kind in Kind::ALL {
            for entry in std::fs::read_dir(root.join(kind.as_str()))? {
                let entry = entry?;
                let name = entry.file_name();
                let Some(d) = name.to_str().and_then(parse_key) else {
                    continue;
                };
                let meta = entry.metadata()?;
                if meta.is_file() {
                    found.push((meta.modified().ok(), kind, d, meta.len()));
                }
            }
        }
        found.sort_by_key(|(mtime, ..)| *mtime);
        let mut lru = Lru::default();
        for (_, kind, d, size) in found {
            lru.touch((kind, d), size);
        }
        let storage = Storage {
            root: root.to_path_buf(),
            max_size,
            lru: Mutex::new(lru),
            tmp_counter: AtomicU64::new(0),
        };
        storage.evict(None);
        Ok(storage)
    }

    pub fn path(&self, kind: Kind, d: &Digest) -> PathBuf {
        self.root.join(kind.as_str()).join(d.to_hex())
    }

    /// A fresh path under `tmp/` for an upload in flight.
    pub fn tmp_path(&self) -> PathBuf {
        let n = self.tmp_counter.fetch_add(1, Ordering::Relaxed);
        self.root.join("tmp").join(format!("upload-{n}"))
    }

    fn lru(&self) -> std::sync::MutexGuard<'_, Lru> {
        self.lru.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the object exists on disk, marking it used if so. `size` is its size.
    pub fn touch(&self, kind: Kind, d: &Digest) -> Option<u64> {
        let meta = std::fs::metadata(self.path(kind, d)).ok()?;
        if !meta.is_file() {
            return None;
        }
        self.lru().touch((kind, *d), meta.len());
        Some(meta.len())
    }

    /// Moves a verified upload into place and evicts the least recently used objects
    /// until the total fits the bound. Returns how many objects were evicted.
    pub fn commit(&self, kind: Kind, d: &Digest, tmp: &Path, size: u64) -> std::io::Result<u64> {
        std::fs::rename(tmp, self.path(kind, d))?;
        self.lru().touch((kind, *d), size);
        Ok(self.evict(Some((kind, *d))))
    }

    /// Evicts oldest-first until under the bound, sparing `keep` (the object just written:
    /// one larger than the whole bound is still served once).
    fn evict(&self, keep: Option<Id>) -> u64 {
        let mut lru = self.lru();
        let mut evicted = 0;
        while lru.total > self.max_size {
            let Some(&id) = lru.order.values().find(|id| Some(**id) != keep) else {
                break;
            };
            lru.remove(&id);
            // Readers holding the file open keep reading it (unlink semantics).
            let _ = std::fs::remove_file(self.path(id.0, &id.1));
            evicted += 1;
        }
        evicted
    }

    pub fn usage(&self) -> Usage {
        let lru = self.lru();
        let ac = lru.entries.keys().filter(|(k, _)| *k == Kind::Ac).count() as u64;
        Usage {
            cas_entries: lru.entries.len() as u64 - ac,
            ac_entries: ac,
            bytes: lru.total,
        }
    }

    pub fn max_size(&self) -> u64 {
        self.max_size
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(s: &Storage, kind: Kind, content: &[u8]) -> (Digest, u64) {
        let d = Digest::of_bytes(content);
        let tmp = s.tmp_path();
        std::fs::write(&tmp, content).unwrap();
        let evicted = s.commit(kind, &d, &tmp, content.len() as u64).unwrap();
        (d, evicted)
    }

    #[test]
    fn evicts_least_recently_used_first() {
        let dir = tempfile::tempdir().unwrap();
        let s = Storage::open(dir.path(), 25).unwrap();
        let (a, _) = put(&s, Kind::Cas, &[b'a'; 10]);
        let (b, _) = put(&s, Kind::Cas, &[b'b'; 10]);
        assert!(s.touch(Kind::Cas, &a).is_some()); // a is now newer than b
        let (c, evicted) = put(&s, Kind::Cas, &[b'c'; 10]);
        assert_eq!(evicted, 1);
        assert!(s.path(Kind::Cas, &a).exists());
        assert!(!s.path(Kind::Cas, &b).exists());
        assert!(s.path(Kind::Cas, &c).exists());
        assert_eq!(s.usage().bytes, 20);
        assert_eq!(s.usage().cas_entries, 2);

        // One object larger than the bound survives alone.
        let (big, _) = put(&s, Kind::Cas, &[b'x'; 40]);
        assert!(s.path(Kind::Cas, &big).exists());
        assert_eq!(s.usage().cas_entries, 1);

        // Reopening indexes what is on disk and enforces the bound.
        drop(s);
        let s = Storage::open(dir.path(), 25).unwrap();
        assert_eq!(s.usage().bytes, 0);
        assert!(!s.path(Kind::Cas, &big).exists());
    }

    #[test]
    fn adopts_files_written_behind_its_back() {
        let dir = tempfile::tempdir().unwrap();
        let s = Storage::open(dir.path(), 1000).unwrap();
        let d = Digest::of_bytes(b"x");
        assert_eq!(s.touch(Kind::Ac, &d), None);
        std::fs::write(s.path(Kind::Ac, &d), b"x").unwrap();
        assert_eq!(s.touch(Kind::Ac, &d), Some(1));
        assert_eq!(s.usage().ac_entries, 1);
    }
}
