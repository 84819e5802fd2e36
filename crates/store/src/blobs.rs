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
        match tokio::fs::remove_file(self.path(id)).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
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
