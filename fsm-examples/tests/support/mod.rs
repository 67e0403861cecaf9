//! What more than one test file here needs.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

/// A store file in the temp dir, unique to this process and call, removed
/// (with its `-wal` and `-shm` companions) on drop.
pub(crate) struct TempStore(pub(crate) PathBuf);

impl TempStore {
    /// A new, not yet existing file whose name starts with `prefix`.
    pub(crate) fn new(prefix: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        Self(std::env::temp_dir().join(format!("{prefix}-{}-{n}.sqlite", std::process::id())))
    }
}

impl Drop for TempStore {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let mut name = self.0.clone().into_os_string();
            name.push(suffix);
            let _ = std::fs::remove_file(name);
        }
    }
}
