//! File contents. [`LocalBlobs`] keeps each file as `<dir>/<id>`; an upload is written to a
//! temporary name and renamed into place when complete, so a crash never leaves half a file
//! under a real id.

use std::path::PathBuf;
use std::pin::Pin;

use tokio::io::{AsyncRead, AsyncWriteExt};

use crate::StoreError;

/// Where file contents live.
#[async_trait::async_trait]
pub trait Blobs: Send + Sync {
    /// Starts writing the contents of `id`.
    async fn create(&self, id: &str) -> Result<BlobWriter, StoreError>;
    /// Reads the contents of `id`; `None` when there are none.
    async fn open(&self, id: &str) -> Result<Option<BlobReader>, StoreError>;
    async fn remove(&self, id: &str) -> Result<(), StoreError>;
    /// Every blob kept, finished or being written, with when it was last written; for the
    /// collector of blobs no file points to.
    async fn list(&self) -> Result<Vec<BlobEntry>, StoreError>;
    /// Removes a blob that [`Blobs::list`] reported as being written (a crashed upload's).
    async fn remove_partial(&self, id: &str) -> Result<(), StoreError>;
}

/// One blob in storage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlobEntry {
    pub id: String,
    /// Still being written (or left by an upload that never finished).
    pub partial: bool,
    pub modified: std::time::SystemTime,
}

/// A blob's contents, streamed.
pub type BlobReader = Pin<Box<dyn AsyncRead + Send>>;

/// Contents on local disk.
pub struct LocalBlobs {
    dir: PathBuf,
}

impl LocalBlobs {
    pub async fn new(dir: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let dir = dir.into();
        tokio::fs::create_dir_all(&dir).await?;
        Ok(Self { dir })
    }

    /// Where the contents of `id` are kept.
    pub fn path(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }
}

#[async_trait::async_trait]
impl Blobs for LocalBlobs {
    async fn create(&self, id: &str) -> Result<BlobWriter, StoreError> {
        let tmp = self.dir.join(format!(".{id}.partial"));
        let file = tokio::fs::File::create(&tmp).await?;
        Ok(BlobWriter {
            file: tokio::io::BufWriter::new(file),
            tmp,
            dest: self.path(id),
        })
    }

    async fn open(&self, id: &str) -> Result<Option<BlobReader>, StoreError> {
        match tokio::fs::File::open(self.path(id)).await {
            Ok(f) => Ok(Some(Box::pin(f))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn remove(&self, id: &str) -> Result<(), StoreError> {
        remove_if_present(self.path(id)).await
    }

    async fn list(&self) -> Result<Vec<BlobEntry>, StoreError> {
        let mut out = Vec::new();
        let mut dir = tokio::fs::read_dir(&self.dir).await?;
        while let Some(entry) = dir.next_entry().await? {
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            let Ok(meta) = entry.metadata().await else {
                continue; // removed meanwhile
            };
            if !meta.is_file() {
                continue;
            }
            let partial = name
                .strip_prefix('.')
                .and_then(|n| n.strip_suffix(".partial"));
            out.push(BlobEntry {
                id: partial.unwrap_or(&name).to_owned(),
                partial: partial.is_some(),
                modified: meta.modified()?,
            });
        }
        Ok(out)
    }

    async fn remove_partial(&self, id: &str) -> Result<(), StoreError> {
        remove_if_present(self.dir.join(format!(".{id}.partial"))).await
    }
}

async fn remove_if_present(path: PathBuf) -> Result<(), StoreError> {
    match tokio::fs::remove_file(path).await {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
        _ => Ok(()),
    }
}

/// A file being written. Dropped without [`BlobWriter::commit`], it is removed.
pub struct BlobWriter {
    file: tokio::io::BufWriter<tokio::fs::File>,
    tmp: PathBuf,
    dest: PathBuf,
}

impl BlobWriter {
    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        self.file.write_all(bytes).await?;
        Ok(())
    }

    /// Flushes to disk and moves the file into place.
    pub async fn commit(mut self) -> Result<(), StoreError> {
        self.file.flush().await?;
        self.file.get_ref().sync_all().await?;
        tokio::fs::rename(&self.tmp, &self.dest).await?;
        self.tmp = PathBuf::new();
        Ok(())
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if !self.tmp.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}
