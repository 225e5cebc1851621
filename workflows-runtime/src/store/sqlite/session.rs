//! Telling a clean shutdown from an unclean one.
//!
//! Beside the store's file, `<file>-session` holds `open` while any process has the store open,
//! and nothing once the last one closed it. Every process holds a shared lock on it while the
//! store is open; a process that opens the store alone (it gets the exclusive lock) and finds
//! `open` knows that the last process to use the store stopped without closing it (a crash, a
//! `kill -9`, a power loss): the store then gets an integrity check. The operating system
//! releases a dead process's lock, so a crash never leaves the store "in use".
//!
//! Between a process's first look and its shared lock, another one opening the store at the
//! same moment may take the marker for a crash's: it then runs a check for nothing, no harm.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::error::backend;
use crate::store::StoreError;

/// What the marker holds while the store is open.
const OPEN: &[u8] = b"open";

/// This process's use of a store, from open to close.
pub(super) struct Session {
    file: File,
}

impl Session {
    /// Marks the store at `db` as open by this process too; true if the last process that had
    /// it open did not close it.
    pub(super) fn begin(db: &Path) -> Result<(Self, bool), StoreError> {
        let path = marker(db);
        let context = || format!("cannot open {}", path.display());
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| backend(context(), e))?;
        let unclean = match file.try_lock() {
            Ok(()) => {
                // Alone: whatever the marker says was left by the last process.
                let mut found = Vec::new();
                file.read_to_end(&mut found).map_err(|e| backend(context(), e))?;
                mark(&mut file, OPEN).map_err(|e| backend(context(), e))?;
                file.unlock().map_err(|e| backend(context(), e))?;
                found == OPEN
            }
            Err(TryLockError::WouldBlock) => false,
            Err(TryLockError::Error(e)) => return Err(backend(context(), e)),
        };
        file.lock_shared().map_err(|e| backend(context(), e))?;
        Ok((Self { file }, unclean))
    }

    /// This process closes the store: if it was the last one, the marker says so.
    pub(super) fn end(mut self) {
        let _ = self.file.unlock();
        if self.file.try_lock().is_ok() {
            let _ = mark(&mut self.file, b"");
            let _ = self.file.unlock();
        }
    }
}

/// The marker beside the store's file.
fn marker(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push("-session");
    PathBuf::from(name)
}

fn mark(file: &mut File, content: &[u8]) -> std::io::Result<()> {
    file.set_len(0)?;
    file.seek(SeekFrom::Start(0))?;
    file.write_all(content)?;
    file.sync_data()
}
