//! Groq's fine-tuning API (`/v1/fine_tunings`): a LoRA adapter ZIP uploaded with purpose
//! `fine_tuning` is registered over a served base model, converted to the engine's adapter
//! format, hot-loaded into the running engine and served as `ft:<base>:<org>/<name>-<hex>`
//! to its organization. The records live in the store (shared by replicas); each replica
//! serves what the store holds ([`FineTunings::sync`], at start and every few seconds).
//!
//! Deleting one stops serving it: requests already running on it finish (they hold their
//! model), and new ones get 404. The engine keeps the adapter's weights until the server
//! restarts (llama.cpp frees an adapter with its model; docs/decisions/0019).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use peregrine_protocol::fine_tunings::{
    CreateFineTuningRequest, FineTuning, FineTuningDeleted, FineTuningList, FineTuningResponse,
};
use peregrine_store::{new_id, FineTuningRecord};
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;
use tracing::{info, warn};

use crate::batches::required_str;
use crate::completions::{now_unix, Completions};
use crate::error::ServiceError;
use crate::files::{store_err, Storage, MAX_FILE_BYTES};
use crate::registry::ServedModel;

/// How often a replica looks for fine tunings registered or deleted elsewhere.
pub const SYNC_EVERY: Duration = Duration::from_secs(5);
/// Longest adapter name (Groq does not say; the name goes into a model id).
const MAX_NAME_CHARS: usize = 64;

/// The fine-tuning API over the store, the file storage and the served models.
pub struct FineTunings {
    completions: Completions,
    storage: Arc<Storage>,
    /// Where converted adapters are kept: `<dir>/<ft id>.gguf`.
    dir: PathBuf,
    /// Held while the served set changes (create, delete, sync), so that a sync never
    /// judges a registration half done.
    changing: tokio::sync::Mutex<()>,
    /// Stored fine tunings this replica failed to load: warned about once, not retried.
    failed: Mutex<HashSet<String>>,
}

fn object(r: &FineTuningRecord) -> FineTuning {
    FineTuning {
        id: r.id.clone(),
        name: r.name.clone(),
        base_model: r.base_model.clone(),
        kind: r.kind.clone(),
        input_file_id: r.input_file_id.clone(),
        created_at: r.created_at,
        fine_tuned_model: r.fine_tuned_model.clone(),
    }
}

fn response(r: &FineTuningRecord) -> FineTuningResponse {
    FineTuningResponse {
        id: r.id.clone(),
        object: Default::default(),
        data: object(r),
    }
}

fn invalid(message: String, param: &'static str) -> ServiceError {
    ServiceError::InvalidParam { message, param }
}

/// Letters, digits, `-`, `_`, `.`: the name becomes part of a model id.
fn check_name(name: &str) -> Result<(), ServiceError> {
    let ok = !name.is_empty()
        && name.chars().count() <= MAX_NAME_CHARS
        && (name.bytes()).all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(invalid(
            format!(
                "`name` must be 1 to {MAX_NAME_CHARS} letters, digits, '-', '_' or '.', got '{name}'"
            ),
            "name",
        ))
    }
}

/// The model id chat completions take, as Groq writes it: the base, the organization, the
/// name and 12 hex digits that tell registrations of one name apart.
fn model_id(base: &str, org: &str, name: &str, id: &str) -> String {
    let hex = hex::encode(Sha256::digest(id.as_bytes()));
    format!("ft:{base}:{org}/{name}-{}", &hex[..12])
}

/// What a registration was asked for, checked.
struct Asked<'a> {
    input_file_id: &'a str,
    name: &'a str,
    base_model: &'a str,
}

fn check_request(req: &CreateFineTuningRequest) -> Result<Asked<'_>, ServiceError> {
    let input_file_id = required_str(&req.input_file_id, "input_file_id")?;
    let name = required_str(&req.name, "name")?;
    let kind = required_str(&req.kind, "type")?;
    let base_model = required_str(&req.base_model, "base_model")?;
    if kind != "lora" {
        return Err(invalid(
            format!("Invalid value: '{kind}'. Supported values are: 'lora'"),
            "type",
        ));
    }
    check_name(name)?;
    Ok(Asked {
        input_file_id,
        name,
        base_model,
    })
}

impl FineTunings {
    /// The API over `completions`' models and `storage`, keeping converted adapters in `dir`.
    pub fn new(completions: Completions, storage: Arc<Storage>, dir: PathBuf) -> Self {
        Self {
            completions,
            storage,
            dir,
            changing: tokio::sync::Mutex::new(()),
            failed: Mutex::new(HashSet::new()),
        }
    }

    fn adapter_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.gguf"))
    }

    /// The served base model an adapter of `org` may be registered over.
    fn base(&self, base_model: &str, org: &str) -> Result<Arc<ServedModel>, ServiceError> {
        let resolved = self.completions.registry().resolve(base_model, org);
        let model = resolved.map(|r| r.model).ok_or_else(|| {
            invalid(
                format!("`base_model` '{base_model}' is not a model this server serves"),
                "base_model",
            )
        })?;
        if model.adapter.is_some() || model.adapter_converter.is_none() {
            return Err(invalid(
                format!("`base_model` '{base_model}' cannot take LoRA adapters"),
                "base_model",
            ));
        }
        Ok(model)
    }

    /// The uploaded ZIP's bytes: a file of `org` with purpose `fine_tuning`.
    async fn input_zip(&self, org: &str, file_id: &str) -> Result<Vec<u8>, ServiceError> {
        let bad = |message| invalid(message, "input_file_id");
        let file = match self.storage.file_record(org, file_id).await {
            Ok(f) => f,
            Err(ServiceError::NotFound(_)) => {
                return Err(bad(format!(
                    "Invalid input file: file `{file_id}` not found."
                )))
            }
            Err(e) => return Err(e),
        };
        if file.purpose != "fine_tuning" {
            return Err(bad(format!(
                "File `{file_id}` was not uploaded with purpose 'fine_tuning'."
            )));
        }
        self.read_blob(file_id).await
    }

    async fn read_blob(&self, file_id: &str) -> Result<Vec<u8>, ServiceError> {
        let mut reader = (self.storage.blobs.open(file_id).await)
            .map_err(store_err)?
            .ok_or_else(|| ServiceError::Internal(format!("the contents of {file_id} are gone")))?;
        let mut bytes = Vec::new();
        (&mut reader)
            .take(MAX_FILE_BYTES)
            .read_to_end(&mut bytes)
            .await
            .map_err(|e| ServiceError::Internal(format!("reading {file_id}: {e}")))?;
        Ok(bytes)
    }

    /// Converts `zip` for `base`, writes it to `path` and loads it into `base`'s engine:
    /// the adapter served as `model_id` to `org`.
    async fn load(
        &self,
        base: &ServedModel,
        zip: Vec<u8>,
        path: &Path,
        model_id: &str,
        org: &str,
    ) -> Result<ServedModel, ServiceError> {
        let convert = base.adapter_converter.clone().ok_or_else(|| {
            invalid(
                format!("`{}` cannot take LoRA adapters", base.id),
                "base_model",
            )
        })?;
        // Unzipping and converting a ZIP of up to 200 MB is CPU work: off the async workers.
        let gguf = tokio::task::spawn_blocking(move || convert(&zip))
            .await
            .map_err(|e| ServiceError::Internal(format!("adapter conversion task: {e}")))?
            .map_err(|why| invalid(format!("Invalid adapter file: {why}"), "input_file_id"))?;
        tokio::fs::create_dir_all(&self.dir)
            .await
            .map_err(|e| ServiceError::Internal(format!("creating {}: {e}", self.dir.display())))?;
        tokio::fs::write(path, &gguf)
            .await
            .map_err(|e| ServiceError::Internal(format!("writing {}: {e}", path.display())))?;
        self.load_file(base, path, model_id, org).await
    }

    /// Loads an adapter file already converted for `base`.
    async fn load_file(
        &self,
        base: &ServedModel,
        path: &Path,
        model_id: &str,
        org: &str,
    ) -> Result<ServedModel, ServiceError> {
        let (runtime, p) = (base.runtime.clone(), path.to_path_buf());
        let loaded = tokio::task::spawn_blocking(move || runtime.load_adapter(&p))
            .await
            .map_err(|e| ServiceError::Internal(format!("adapter load task: {e}")))?;
        // The conversion checked shapes against the base; what the engine still refuses is
        // the adapter's fault too.
        let adapter = loaded.map_err(|e| {
            invalid(
                format!("the adapter does not fit `{}`: {e}", base.id),
                "input_file_id",
            )
        })?;
        Ok(base
            .with_adapter(model_id.to_string(), adapter)
            .owned_by_org(org))
    }

    /// `POST /v1/fine_tunings`.
    pub async fn create(
        &self,
        org: &str,
        req: &CreateFineTuningRequest,
    ) -> Result<FineTuningResponse, ServiceError> {
        let asked = check_request(req)?;
        let base = self.base(asked.base_model, org)?;
        let zip = self.input_zip(org, asked.input_file_id).await?;
        let id = new_id("ft");
        let record = FineTuningRecord {
            fine_tuned_model: model_id(asked.base_model, org, asked.name, &id),
            id,
            org_id: org.to_string(),
            name: asked.name.to_string(),
            base_model: asked.base_model.to_string(),
            kind: "lora".into(),
            input_file_id: asked.input_file_id.to_string(),
            created_at: now_unix(),
        };
        let path = self.adapter_path(&record.id);
        let _changing = self.changing.lock().await;
        let served = match self
            .load(&base, zip, &path, &record.fine_tuned_model, org)
            .await
        {
            Ok(s) => s,
            Err(e) => {
                let _ = tokio::fs::remove_file(&path).await;
                return Err(e);
            }
        };
        if let Err(e) = self.storage.store.insert_fine_tuning(&record).await {
            let _ = tokio::fs::remove_file(&path).await;
            return Err(store_err(e));
        }
        info!(model = %record.fine_tuned_model, base = %base.id, "serving fine-tuned LoRA adapter");
        self.completions.registry().add_fine_tuned(served);
        Ok(response(&record))
    }

    /// A fine tuning of `org`; `NotFound` for another organization's (not revealed).
    async fn record(&self, org: &str, id: &str) -> Result<FineTuningRecord, ServiceError> {
        (self.storage.store.fine_tuning(id).await)
            .map_err(store_err)?
            .filter(|r| r.org_id == org)
            .ok_or_else(|| ServiceError::NotFound(format!("Fine tuning `{id}` not found.")))
    }

    /// `GET /v1/fine_tunings`: `org`'s, newest first.
    pub async fn list(&self, org: &str) -> Result<FineTuningList, ServiceError> {
        let all = (self.storage.store.fine_tunings(Some(org)).await).map_err(store_err)?;
        Ok(FineTuningList {
            object: Default::default(),
            data: all.iter().map(object).collect(),
        })
    }

    /// `GET /v1/fine_tunings/{id}`.
    pub async fn get(&self, org: &str, id: &str) -> Result<FineTuningResponse, ServiceError> {
        Ok(response(&self.record(org, id).await?))
    }

    /// `DELETE /v1/fine_tunings/{id}`: no longer served; running requests finish.
    pub async fn delete(&self, org: &str, id: &str) -> Result<FineTuningDeleted, ServiceError> {
        let r = self.record(org, id).await?;
        let _changing = self.changing.lock().await;
        (self.storage.store.delete_fine_tuning(&r.id).await).map_err(store_err)?;
        self.completions
            .registry()
            .remove_fine_tuned(&r.fine_tuned_model);
        let _ = tokio::fs::remove_file(self.adapter_path(&r.id)).await;
        info!(model = %r.fine_tuned_model, "fine-tuned LoRA adapter deleted");
        Ok(FineTuningDeleted {
            id: r.id,
            object: Default::default(),
            deleted: true,
        })
    }

    /// Serves what the store holds: loads the fine tunings registered elsewhere (another
    /// replica, an earlier run of this server) and stops serving those deleted elsewhere.
    /// Returns how many were loaded.
    pub async fn sync(&self) -> Result<usize, ServiceError> {
        let _changing = self.changing.lock().await;
        let stored = (self.storage.store.fine_tunings(None).await).map_err(store_err)?;
        let registry = self.completions.registry();
        let served: HashSet<String> = registry.fine_tuned_ids().into_iter().collect();
        let wanted: HashSet<&str> = stored.iter().map(|r| r.fine_tuned_model.as_str()).collect();
        for gone in served.iter().filter(|m| !wanted.contains(m.as_str())) {
            registry.remove_fine_tuned(gone);
            info!(model = %gone, "fine-tuned LoRA adapter deleted elsewhere: no longer served");
        }
        let mut loaded = 0;
        for r in stored
            .iter()
            .filter(|r| !served.contains(&r.fine_tuned_model))
        {
            if self
                .failed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(&r.id)
            {
                continue;
            }
            match self.restore(r).await {
                Ok(model) => {
                    registry.add_fine_tuned(model);
                    loaded += 1;
                    info!(model = %r.fine_tuned_model, "serving fine-tuned LoRA adapter");
                }
                Err(e) => {
                    warn!(model = %r.fine_tuned_model, error = %e, "cannot serve a stored fine tuning");
                    self.failed
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(r.id.clone());
                }
            }
        }
        Ok(loaded)
    }

    /// Loads a stored fine tuning: its converted file, or (when this replica has none) the
    /// uploaded ZIP converted again.
    async fn restore(&self, r: &FineTuningRecord) -> Result<ServedModel, ServiceError> {
        let base = self.base(&r.base_model, &r.org_id)?;
        let path = self.adapter_path(&r.id);
        if tokio::fs::try_exists(&path).await.unwrap_or(false) {
            return self
                .load_file(&base, &path, &r.fine_tuned_model, &r.org_id)
                .await;
        }
        let zip = self.read_blob(&r.input_file_id).await?;
        self.load(&base, zip, &path, &r.fine_tuned_model, &r.org_id)
            .await
    }

    /// Runs [`FineTunings::sync`] every `every`, for as long as the server runs.
    pub fn spawn_sync(self: Arc<Self>, every: Duration) {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = self.sync().await {
                    warn!(error = %e, "fine tunings: cannot read the store");
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_ids_have_groqs_shape() {
        let id = model_id("llama-3.1-8b-instant", "org_1", "my-lora", "ft_01");
        let (head, hex) = id.rsplit_once('-').unwrap();
        assert_eq!(head, "ft:llama-3.1-8b-instant:org_1/my-lora");
        assert_eq!(hex.len(), 12);
        assert!(hex.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(
            id,
            model_id("llama-3.1-8b-instant", "org_1", "my-lora", "ft_02")
        );
    }

    #[test]
    fn names_are_checked() {
        for ok in ["a", "my-lora_adapter.v2", &"x".repeat(64)] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "has space", "slash/name", "colon:name", &"x".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn requests_are_checked_field_by_field() {
        let req = |v: serde_json::Value| serde_json::from_value(v).unwrap();
        let err = |v| match check_request(&req(v)) {
            Err(ServiceError::InvalidParam { message, param }) => (param, message),
            other => panic!("{:?}", other.map(|_| ())),
        };
        let full = serde_json::json!({
            "input_file_id": "file_1", "name": "n", "type": "lora", "base_model": "m"
        });
        assert!(check_request(&req(full.clone())).is_ok());
        for (field, param) in [
            ("input_file_id", "input_file_id"),
            ("name", "name"),
            ("type", "type"),
            ("base_model", "base_model"),
        ] {
            let mut missing = full.clone();
            missing.as_object_mut().unwrap().remove(field);
            assert_eq!(err(missing).0, param);
            let mut wrong = full.clone();
            wrong[field] = serde_json::json!(3);
            assert_eq!(err(wrong).0, param);
        }
        let mut full_ft = full.clone();
        full_ft["type"] = "full".into();
        assert_eq!(
            err(full_ft).1,
            "Invalid value: 'full'. Supported values are: 'lora'"
        );
    }
}
