//! The Files API over [`Store`] and [`Blobs`]: uploads streamed to storage with Groq's 200 MB
//! limit (and, for batch input, 50,000 lines) checked on the way, listing, retrieval,
//! contents and deletion. Purposes: `batch` (JSONL batch input) and `fine_tuning` (a LoRA
//! adapter ZIP for the fine-tuning API).
//! [`Storage`] also carries the Batch API (`batches.rs`) and wakes the batch worker.

use std::sync::Arc;

use peregrine_protocol::files::{FileDeleted, FileList, FileObject};
use peregrine_store::{new_id, BlobReader, BlobWriter, Blobs, FileRecord, Store, StoreError};

use crate::completions::now_unix;
use crate::error::ServiceError;

/// Largest upload, in bytes (Groq: 200 MB).
pub const MAX_FILE_BYTES: u64 = 200_000_000;
/// Most lines in an upload (Groq: 50,000).
pub const MAX_FILE_LINES: u64 = 50_000;

/// Where files and batches live.
pub struct Storage {
    pub store: Arc<dyn Store>,
    pub blobs: Arc<dyn Blobs>,
    /// Wakes the batch worker (a batch was created or cancelled, a line finished).
    pub wake: Arc<tokio::sync::Notify>,
}

pub(crate) fn store_err(e: StoreError) -> ServiceError {
    ServiceError::Internal(e.to_string())
}

/// What an upload is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// JSONL input of a batch: at most [`MAX_FILE_LINES`] lines.
    Batch,
    /// A LoRA adapter ZIP (`adapter_model.safetensors` + `adapter_config.json`).
    FineTuning,
}

impl Purpose {
    /// The `purpose` field of an upload.
    pub fn parse(p: &str) -> Result<Self, ServiceError> {
        match p {
            "batch" => Ok(Self::Batch),
            "fine_tuning" => Ok(Self::FineTuning),
            p => Err(ServiceError::BadRequest(format!(
                "`purpose` must be 'batch' or 'fine_tuning', got '{p}'"
            ))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Batch => "batch",
            Self::FineTuning => "fine_tuning",
        }
    }
}

/// The first bytes of every ZIP archive (a local file header).
const ZIP_MAGIC: &[u8; 4] = b"PK\x03\x04";

fn too_many_lines() -> ServiceError {
    ServiceError::BadRequest(format!(
        "`file` has more than {MAX_FILE_LINES} lines, the most a batch file may have"
    ))
}

fn file_object(f: &FileRecord) -> FileObject {
    FileObject {
        id: f.id.clone(),
        object: Default::default(),
        bytes: f.bytes,
        created_at: f.created_at,
        filename: f.filename.clone(),
        purpose: f.purpose.clone(),
        status: Default::default(),
    }
}

fn valid_id(id: &str) -> bool {
    id.strip_prefix("file_")
        .is_some_and(|r| !r.is_empty() && r.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// A file being uploaded: its contents go to storage as they arrive. Dropped before
/// [`Storage::finish_upload`], nothing of it is kept.
pub struct Upload {
    writer: BlobWriter,
    record: FileRecord,
    /// The last byte written (a last line without a newline still counts).
    last: u8,
    /// The purpose, when the form gave it before the file: a batch file over the line
    /// limit is then refused as soon as it is, not at the end.
    purpose: Option<Purpose>,
    /// The first bytes (a ZIP's signature).
    head: Vec<u8>,
}

impl Upload {
    /// Writes the next part of the contents, within the size and line limits.
    pub async fn write(&mut self, chunk: &[u8]) -> Result<(), ServiceError> {
        let r = &mut self.record;
        r.bytes += chunk.len() as i64;
        if r.bytes as u64 > MAX_FILE_BYTES {
            return Err(ServiceError::PayloadTooLarge(MAX_FILE_BYTES as usize));
        }
        r.lines += chunk.iter().filter(|&&b| b == b'\n').count() as i64;
        self.last = chunk.last().copied().unwrap_or(self.last);
        let want = ZIP_MAGIC.len().saturating_sub(self.head.len());
        self.head.extend_from_slice(&chunk[..want.min(chunk.len())]);
        if self.purpose == Some(Purpose::Batch) && r.lines as u64 > MAX_FILE_LINES {
            return Err(too_many_lines());
        }
        self.writer.write(chunk).await.map_err(store_err)
    }

    /// The file part has ended: an empty file is refused at once.
    pub fn end(&self) -> Result<(), ServiceError> {
        if self.record.bytes == 0 {
            return Err(ServiceError::BadRequest("`file` is empty".into()));
        }
        Ok(())
    }
}

impl Storage {
    pub fn new(store: Arc<dyn Store>, blobs: Arc<dyn Blobs>) -> Self {
        Self {
            store,
            blobs,
            wake: Arc::new(tokio::sync::Notify::new()),
        }
    }

    /// Starts an upload named `filename` for organization `org`; `purpose` when the form
    /// has given it already.
    pub async fn begin_upload(
        &self,
        org: &str,
        filename: &str,
        purpose: Option<Purpose>,
    ) -> Result<Upload, ServiceError> {
        let id = new_id("file");
        let writer = self.blobs.create(&id).await.map_err(store_err)?;
        Ok(Upload {
            writer,
            record: FileRecord {
                id,
                bytes: 0,
                lines: 0,
                created_at: now_unix(),
                filename: filename.to_string(),
                purpose: String::new(),
                org_id: org.to_string(),
            },
            last: b'\n',
            purpose,
            head: Vec::new(),
        })
    }

    /// Completes an upload whose file part has [`Upload::end`]ed: checks what only the
    /// whole request can tell, then keeps the file.
    pub async fn finish_upload(
        &self,
        upload: Upload,
        purpose: Option<&str>,
    ) -> Result<FileObject, ServiceError> {
        let Upload {
            writer,
            mut record,
            last,
            head,
            ..
        } = upload;
        if last != b'\n' {
            record.lines += 1;
        }
        let purpose = match purpose {
            Some(p) => Purpose::parse(p)?,
            None => return Err(ServiceError::BadRequest("`purpose` is required".into())),
        };
        record.purpose = purpose.as_str().into();
        match purpose {
            Purpose::Batch if record.lines as u64 > MAX_FILE_LINES => return Err(too_many_lines()),
            Purpose::FineTuning if head != ZIP_MAGIC => {
                return Err(ServiceError::BadRequest(
                    "a `fine_tuning` file must be a ZIP archive of `adapter_model.safetensors` \
                     and `adapter_config.json`"
                        .into(),
                ))
            }
            _ => {}
        }
        writer.commit().await.map_err(store_err)?;
        if let Err(e) = self.store.insert_file(&record).await {
            let _ = self.blobs.remove(&record.id).await;
            return Err(store_err(e));
        }
        Ok(file_object(&record))
    }

    /// A stored file's record; `NotFound` for ids that are not ours and for files of another
    /// organization (whose existence is not revealed).
    pub(crate) async fn file_record(
        &self,
        org: &str,
        id: &str,
    ) -> Result<FileRecord, ServiceError> {
        let not_found = || ServiceError::NotFound(format!("File `{id}` not found."));
        if !valid_id(id) {
            return Err(not_found());
        }
        self.store
            .file(id)
            .await
            .map_err(store_err)?
            .filter(|f| f.org_id == org)
            .ok_or_else(not_found)
    }

    /// `GET /files`: every file of `org`, newest first.
    pub async fn list_files(&self, org: &str) -> Result<FileList, ServiceError> {
        let all = self.store.files(Some(org)).await.map_err(store_err)?;
        Ok(FileList {
            object: Default::default(),
            data: all.iter().map(file_object).collect(),
        })
    }

    /// `GET /files/{id}`.
    pub async fn file(&self, org: &str, id: &str) -> Result<FileObject, ServiceError> {
        Ok(file_object(&self.file_record(org, id).await?))
    }

    /// `GET /files/{id}/content`: the size and a reader of the bytes.
    pub async fn content(&self, org: &str, id: &str) -> Result<(i64, BlobReader), ServiceError> {
        let f = self.file_record(org, id).await?;
        let reader = self
            .blobs
            .open(&f.id)
            .await
            .map_err(store_err)?
            .ok_or_else(|| ServiceError::Internal(format!("the contents of {} are gone", f.id)))?;
        Ok((f.bytes, reader))
    }

    /// `DELETE /files/{id}`.
    pub async fn delete_file(&self, org: &str, id: &str) -> Result<FileDeleted, ServiceError> {
        let f = self.file_record(org, id).await?;
        self.store.delete_file(&f.id).await.map_err(store_err)?;
        self.blobs.remove(&f.id).await.map_err(store_err)?;
        Ok(FileDeleted {
            id: f.id,
            object: Default::default(),
            deleted: true,
        })
    }
}
