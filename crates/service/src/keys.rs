//! API keys: static keys from the settings, and managed keys kept in the store
//! (`peregrine keys create|list|revoke`), each resolved to the organization a request acts
//! for (docs/decisions/0014).
//!
//! - A managed key's secret (`gsk_` + 52 letters and digits, ~310 bits) is shown once; the
//!   store keeps its SHA-256 only. A fast hash is enough for secrets this long: nobody can
//!   guess one, so nothing is gained by making each guess slow.
//! - Static keys are compared by hash, in constant time, against every configured key.
//!   Managed keys are found by their hash through the store's index: the time that takes
//!   depends on the hash, which an attacker cannot steer toward a key's.
//! - Lookups are cached for [`KEY_CACHE_TTL`], so a revoked key stops working on every
//!   replica within that time, and a request costs no database query in the common case.
//! - Without any static key and any active managed key, requests are not authenticated and
//!   act for [`DEFAULT_ORG`], as before keys existed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use peregrine_store::{new_id, KeyRecord, Store, DEFAULT_ORG};
use rand::distributions::{Alphanumeric, DistString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::completions::now_unix;
use crate::error::ServiceError;
use crate::files::store_err;

/// How long a key lookup (and whether any managed key is active) is trusted: the most time a
/// revoked key keeps working on a replica [2 s].
pub const KEY_CACHE_TTL: Duration = Duration::from_secs(2);

/// Most cached lookups; the cache is emptied when full, so a flood of wrong keys cannot grow
/// it [10,000].
const MAX_CACHED: usize = 10_000;

/// Letters and digits after `gsk_` in a managed key's secret, as in Groq's keys [52].
const SECRET_CHARS: usize = 52;

/// Who a request acts for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub org: String,
    /// The managed key's id (`key_...`); `None` for a static key or no authentication.
    pub key_id: Option<String>,
}

impl Principal {
    /// The organization of unauthenticated requests and static keys.
    pub fn default_org() -> Self {
        Self {
            org: DEFAULT_ORG.to_string(),
            key_id: None,
        }
    }
}

/// A newly created key: its record and the secret, which is not kept anywhere.
pub struct NewKey {
    pub record: KeyRecord,
    pub secret: String,
}

/// Hex SHA-256 of a secret, as the store keeps it.
pub fn secret_hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// An organization id: 1 to 64 letters, digits, `_` or `-`.
pub fn valid_org(org: &str) -> bool {
    (1..=64).contains(&org.len())
        && org
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

type Cached = (Instant, Option<Principal>);

/// Authenticates requests against the static and the managed keys.
pub struct ApiKeys {
    store: Option<Arc<dyn Store>>,
    statics: Vec<[u8; 32]>,
    /// Lookups of managed keys by secret hash.
    cache: Mutex<HashMap<String, Cached>>,
    /// Whether any managed key was active, and when that was read.
    any_managed: Mutex<Option<(Instant, bool)>>,
}

impl ApiKeys {
    /// Static `keys`, and the managed keys of `store` when there is one.
    pub fn new(keys: &[String], store: Option<Arc<dyn Store>>) -> Self {
        Self {
            store,
            statics: keys.iter().map(|k| Sha256::digest(k).into()).collect(),
            cache: Mutex::new(HashMap::new()),
            any_managed: Mutex::new(None),
        }
    }

    /// Who the bearer of `key` (the `Authorization: Bearer` value, if any) acts for; Groq's
    /// 401 `invalid_api_key` for a missing, unknown or revoked key where keys are required.
    pub async fn authenticate(&self, key: Option<&str>) -> Result<Principal, ServiceError> {
        if !self.required().await? {
            return Ok(Principal::default_org());
        }
        let key = key.ok_or(ServiceError::InvalidApiKey)?;
        let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        // Every static key is compared, so the time does not tell which one matched.
        let is_static = self
            .statics
            .iter()
            .fold(subtle::Choice::from(0), |hit, k| hit | k.ct_eq(&digest));
        if bool::from(is_static) {
            return Ok(Principal::default_org());
        }
        self.managed(&hex::encode(digest))
            .await?
            .ok_or(ServiceError::InvalidApiKey)
    }

    /// Whether requests must carry a key: there are static keys, or an active managed one.
    async fn required(&self) -> Result<bool, ServiceError> {
        if !self.statics.is_empty() {
            return Ok(true);
        }
        let Some(store) = &self.store else {
            return Ok(false);
        };
        if let Some((at, any)) = *lock(&self.any_managed) {
            if at.elapsed() < KEY_CACHE_TTL {
                return Ok(any);
            }
        }
        let any = store.any_active_key().await.map_err(store_err)?;
        *lock(&self.any_managed) = Some((Instant::now(), any));
        Ok(any)
    }

    /// The principal of an active managed key with this secret hash.
    async fn managed(&self, hash: &str) -> Result<Option<Principal>, ServiceError> {
        let Some(store) = &self.store else {
            return Ok(None);
        };
        if let Some((at, p)) = lock(&self.cache).get(hash) {
            if at.elapsed() < KEY_CACHE_TTL {
                return Ok(p.clone());
            }
        }
        let found = store.key_by_hash(hash).await.map_err(store_err)?;
        let principal = found.filter(|k| k.revoked_at.is_none()).map(|k| Principal {
            org: k.org_id,
            key_id: Some(k.id),
        });
        let mut cache = lock(&self.cache);
        if cache.len() >= MAX_CACHED {
            cache.clear();
        }
        cache.insert(hash.to_string(), (Instant::now(), principal.clone()));
        Ok(principal)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Creates a managed key named `name` for organization `org`; the secret is returned once.
pub async fn create(store: &dyn Store, name: &str, org: &str) -> Result<NewKey, ServiceError> {
    if !valid_org(org) {
        return Err(ServiceError::BadRequest(format!(
            "organization `{org}`: use 1 to 64 letters, digits, `_` or `-`"
        )));
    }
    let secret = format!(
        "gsk_{}",
        Alphanumeric.sample_string(&mut rand::rngs::OsRng, SECRET_CHARS)
    );
    let record = KeyRecord {
        id: new_id("key"),
        name: name.to_string(),
        org_id: org.to_string(),
        secret_hash: secret_hash(&secret),
        hint: format!("{}...{}", &secret[..8], &secret[secret.len() - 4..]),
        created_at: now_unix(),
        revoked_at: None,
    };
    store.insert_key(&record).await.map_err(store_err)?;
    Ok(NewKey { record, secret })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn organizations_are_short_plain_names() {
        assert!(valid_org("org_default"));
        assert!(valid_org("team-a"));
        assert!(!valid_org(""));
        assert!(!valid_org("a b"));
        assert!(!valid_org("o/../x"));
        assert!(!valid_org(&"x".repeat(65)));
    }

    #[test]
    fn the_hash_is_hex_sha256() {
        assert_eq!(
            secret_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[tokio::test]
    async fn static_keys_without_a_store() {
        let keys = ApiKeys::new(&["k1".into(), "k2".into()], None);
        assert_eq!(
            keys.authenticate(Some("k2")).await.unwrap(),
            Principal::default_org()
        );
        assert!(matches!(
            keys.authenticate(Some("k3")).await,
            Err(ServiceError::InvalidApiKey)
        ));
        assert!(matches!(
            keys.authenticate(None).await,
            Err(ServiceError::InvalidApiKey)
        ));
        let open = ApiKeys::new(&[], None);
        assert_eq!(
            open.authenticate(None).await.unwrap(),
            Principal::default_org()
        );
    }
}
