//! Batches a sink could not take, kept on local disk in arrival order until
//! it can: one JSON file per batch, written to a temporary name and renamed,
//! so a crash leaves either the whole batch or none of it.

use std::fs;
use std::path::{Path, PathBuf};

use super::{Batch, SinkError};

/// A directory of spooled batches, oldest first.
#[derive(Debug)]
pub struct RowSpool {
    dir: PathBuf,
    next: u64,
}

impl RowSpool {
    /// Opens (creating) the spool in `dir`, resuming after its newest file.
    ///
    /// # Errors
    ///
    /// When the directory cannot be created or listed.
    pub fn open(dir: &Path) -> Result<Self, SinkError> {
        fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        let next = Self::files(dir)?
            .last()
            .and_then(|(seq, _)| seq.checked_add(1))
            .unwrap_or(0);
        Ok(Self {
            dir: dir.to_path_buf(),
            next,
        })
    }

    /// Appends a batch.
    ///
    /// # Errors
    ///
    /// When the file cannot be written (disk full): the caller still holds
    /// the batch.
    pub fn push(&mut self, batch: &Batch) -> Result<(), SinkError> {
        let name = self.dir.join(format!("{:020}.json", self.next));
        let tmp = self.dir.join(format!("{:020}.tmp", self.next));
        let bytes = serde_json::to_vec(batch).map_err(|e| io(&tmp, e.into()))?;
        fs::write(&tmp, bytes).map_err(|e| io(&tmp, e))?;
        fs::rename(&tmp, &name).map_err(|e| io(&name, e))?;
        self.next += 1;
        Ok(())
    }

    /// The oldest spooled batch and its file, if any.
    ///
    /// # Errors
    ///
    /// When the directory or file cannot be read, or the file is corrupt.
    pub fn peek(&self) -> Result<Option<(PathBuf, Batch)>, SinkError> {
        let Some((_, path)) = Self::files(&self.dir)?.into_iter().next() else {
            return Ok(None);
        };
        let bytes = fs::read(&path).map_err(|e| io(&path, e))?;
        let batch = serde_json::from_slice(&bytes).map_err(|e| SinkError::CorruptSpool {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Ok(Some((path, batch)))
    }

    /// Replaces a spooled batch with what is left of it after a partial
    /// delivery (atomically: temporary file and rename).
    ///
    /// # Errors
    ///
    /// When the file cannot be written.
    pub fn replace(&self, path: &Path, batch: &Batch) -> Result<(), SinkError> {
        let tmp = path.with_extension("tmp");
        let bytes = serde_json::to_vec(batch).map_err(|e| io(&tmp, e.into()))?;
        fs::write(&tmp, bytes).map_err(|e| io(&tmp, e))?;
        fs::rename(&tmp, path).map_err(|e| io(path, e))
    }

    /// Removes a batch that was delivered.
    ///
    /// # Errors
    ///
    /// When the file cannot be removed.
    pub fn remove(&self, path: &Path) -> Result<(), SinkError> {
        fs::remove_file(path).map_err(|e| io(path, e))
    }

    /// Number of spooled batches.
    ///
    /// # Errors
    ///
    /// When the directory cannot be listed.
    pub fn len(&self) -> Result<usize, SinkError> {
        Ok(Self::files(&self.dir)?.len())
    }

    /// Whether nothing is spooled.
    ///
    /// # Errors
    ///
    /// When the directory cannot be listed.
    pub fn is_empty(&self) -> Result<bool, SinkError> {
        Ok(self.len()? == 0)
    }

    fn files(dir: &Path) -> Result<Vec<(u64, PathBuf)>, SinkError> {
        let mut out = Vec::new();
        for entry in fs::read_dir(dir).map_err(|e| io(dir, e))? {
            let path = entry.map_err(|e| io(dir, e))?.path();
            if path.extension().is_some_and(|e| e == "json")
                && let Some(seq) = path
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .and_then(|s| s.parse::<u64>().ok())
            {
                out.push((seq, path));
            }
        }
        out.sort_unstable();
        Ok(out)
    }
}

fn io(path: &Path, source: std::io::Error) -> SinkError {
    SinkError::Spool {
        path: path.display().to_string(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::PcapRow;

    fn batch(n: u64) -> Batch {
        Batch {
            pcaps: vec![PcapRow {
                day: 1,
                call_id: format!("c{n}"),
                path: "p".into(),
                packets: n,
                bytes: 0,
                first_ns: 0,
                last_ns: 0,
            }],
            ..Batch::default()
        }
    }

    #[test]
    fn fifo_across_reopen_and_corrupt_files_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = RowSpool::open(dir.path()).unwrap();
        assert!(spool.peek().unwrap().is_none());
        spool.push(&batch(1)).unwrap();
        spool.push(&batch(2)).unwrap();
        drop(spool);
        let mut spool = RowSpool::open(dir.path()).unwrap();
        spool.push(&batch(3)).unwrap();
        assert_eq!(spool.len().unwrap(), 3);
        let mut seen = Vec::new();
        while let Some((path, b)) = spool.peek().unwrap() {
            seen.push(b.pcaps[0].packets);
            spool.remove(&path).unwrap();
        }
        assert_eq!(seen, vec![1, 2, 3]);
        fs::write(dir.path().join("00000000000000000009.json"), b"{not json").unwrap();
        assert!(matches!(spool.peek(), Err(SinkError::CorruptSpool { .. })));
    }
}
