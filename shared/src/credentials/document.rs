//! Where the tokens document and the status document come from.
//!
//! On Lambda both are secrets in Secrets Manager (`secret.rs`). The
//! self-hosted server has no AWS: the same tokens JSON is a file
//! (`TOKENS_FILE`), read again whenever it changes, so editing it rotates
//! tokens and keys with no restart; the status document is held in memory,
//! written by the server's own liveness timer. Every source answers the same
//! way: the current value, the last good one when a new version is broken
//! (logged), or `NotFound`.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use serde::de::DeserializeOwned;

use super::secret::{CachedDocument, SecretError};

/// The largest tokens file read: room for thousands of tokens and keys.
const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;

pub enum Document<T> {
    /// Secrets Manager, cached (the Lambda functions).
    Secret(Box<CachedDocument<T>>),
    /// A JSON file (the self-hosted server's `TOKENS_FILE`).
    File(FileDocument<T>),
    /// Held in memory: the status the server's liveness timer writes.
    Memory(Arc<Latest<T>>),
}

impl<T: DeserializeOwned + Send + Sync + 'static> Document<T> {
    pub async fn get(&self) -> Result<Arc<T>, SecretError> {
        match self {
            Self::Secret(secret) => secret.get().await,
            Self::File(file) => file.get().await,
            Self::Memory(latest) => latest
                .get()
                .ok_or_else(|| SecretError::NotFound(latest.name.clone())),
        }
    }

    /// Read it afresh at the next `get` (a secret's cache is expired; a file
    /// and the memory are always read as they are).
    pub async fn expire(&self) {
        if let Self::Secret(secret) = self {
            secret.expire().await;
        }
    }

    /// What the document is called in errors and logs (never its content).
    pub fn id(&self) -> &str {
        match self {
            Self::Secret(secret) => secret.id(),
            Self::File(file) => &file.name,
            Self::Memory(latest) => &latest.name,
        }
    }
}

/// The newest value written, if any.
pub struct Latest<T> {
    name: String,
    value: RwLock<Option<Arc<T>>>,
}

impl<T> Latest<T> {
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            value: RwLock::new(None),
        }
    }

    pub fn get(&self) -> Option<Arc<T>> {
        self.value.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn set(&self, value: T) {
        *self.value.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(value));
    }
}

/// A JSON file, parsed again only when its modification time or length
/// changes (one `stat` per read otherwise).
pub struct FileDocument<T> {
    path: PathBuf,
    name: String,
    held: Mutex<Option<(Stamp, Arc<T>)>>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
}

impl<T: DeserializeOwned + Send + Sync + 'static> FileDocument<T> {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        Self {
            name: format!("file {}", path.display()),
            path,
            held: Mutex::new(None),
        }
    }

    fn held(&self) -> Option<(Stamp, Arc<T>)> {
        self.held.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub async fn get(&self) -> Result<Arc<T>, SecretError> {
        let held = self.held();
        let meta = match tokio::fs::metadata(&self.path).await {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(SecretError::NotFound(self.name.clone()))
            }
            Err(e) => return self.unreadable(held, e.to_string()),
        };
        let stamp = Stamp {
            modified: meta.modified().ok(),
            len: meta.len(),
        };
        if let Some((seen, value)) = &held {
            if *seen == stamp {
                return Ok(value.clone());
            }
        }
        if meta.len() > MAX_FILE_BYTES {
            let message = format!(
                "it is {} bytes, more than the {MAX_FILE_BYTES} read",
                meta.len()
            );
            return self.unreadable(held, message);
        }
        let bytes = match tokio::fs::read(&self.path).await {
            Ok(bytes) => bytes,
            Err(e) => return self.unreadable(held, e.to_string()),
        };
        match serde_json::from_slice::<T>(&bytes) {
            Ok(value) => {
                let value = Arc::new(value);
                *self.held.lock().unwrap_or_else(|e| e.into_inner()) = Some((stamp, value.clone()));
                Ok(value)
            }
            // Never echo the text: it holds secrets.
            Err(e) => self.keep(
                held,
                SecretError::Malformed {
                    id: self.name.clone(),
                    message: format!("line {}, column {}", e.line(), e.column()),
                },
            ),
        }
    }

    fn unreadable(
        &self,
        held: Option<(Stamp, Arc<T>)>,
        message: String,
    ) -> Result<Arc<T>, SecretError> {
        let id = self.name.clone();
        self.keep(held, SecretError::Unreadable { id, message })
    }

    /// A read that failed: the last good value if there is one (logged),
    /// else the error.
    fn keep(
        &self,
        held: Option<(Stamp, Arc<T>)>,
        error: SecretError,
    ) -> Result<Arc<T>, SecretError> {
        match held {
            Some((_, value)) => {
                tracing::warn!(document = %self.name, error = %error, "the tokens file cannot be used as it is now; serving its last good version");
                Ok(value)
            }
            None => Err(error),
        }
    }
}

/// Replace `path` with `bytes` atomically, readable by its owner only (mode
/// 600): written to a temporary file beside it, synced, then renamed over
/// it, so a reader (or a crash) sees the old document or the new one, never
/// half of one. For files that hold tokens (the state file, a tokens file
/// `gateway login` adds to).
pub(crate) async fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", uuid::Uuid::new_v4().simple()));
    let mut options = tokio::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    options.mode(0o600);
    let written = async {
        let mut file = options.open(&tmp).await?;
        file.write_all(bytes).await?;
        file.sync_all().await?;
        drop(file);
        tokio::fs::rename(&tmp, path).await
    }
    .await;
    if written.is_err() {
        let _ = tokio::fs::remove_file(&tmp).await;
    }
    written
}

#[cfg(test)]
mod tests {
    use super::super::secret::TokensDocument;
    use super::*;

    fn write(path: &std::path::Path, text: &str) {
        std::fs::write(path, text).unwrap();
    }

    #[tokio::test]
    async fn a_file_is_read_again_when_it_changes_and_its_last_good_version_kept() {
        let dir = std::env::temp_dir().join(format!("gw-doc-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tokens.json");
        let doc = Document::File(FileDocument::<TokensDocument>::new(&path));
        assert!(matches!(doc.get().await, Err(SecretError::NotFound(_))));

        write(&path, r#"{"tokens":["a"],"api_keys":["sk-1"]}"#);
        assert_eq!(doc.get().await.unwrap().tokens, vec!["a"]);
        // A different length is a different stamp, whatever the clock's resolution.
        write(&path, r#"{"tokens":["a","b"],"api_keys":["sk-1"]}"#);
        assert_eq!(doc.get().await.unwrap().tokens, vec!["a", "b"]);
        // Broken mid-edit: the last good version is served, the text never echoed.
        write(&path, r#"{"tokens":["secret-tok"#);
        assert_eq!(doc.get().await.unwrap().tokens, vec!["a", "b"]);

        let fresh = Document::File(FileDocument::<TokensDocument>::new(&path));
        let Err(error) = fresh.get().await else {
            panic!("a broken file with nothing good before it is an error")
        };
        assert!(matches!(error, SecretError::Malformed { .. }), "{error}");
        assert!(!error.to_string().contains("secret-tok"), "{error}");
        assert!(error.to_string().contains("tokens.json"), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn memory_is_not_found_until_written() {
        let latest = Arc::new(Latest::<TokensDocument>::new("status"));
        let doc = Document::Memory(latest.clone());
        assert!(matches!(doc.get().await, Err(SecretError::NotFound(_))));
        latest.set(serde_json::from_str(r#"{"tokens":["x"]}"#).unwrap());
        assert_eq!(doc.get().await.unwrap().tokens, vec!["x"]);
    }
}
