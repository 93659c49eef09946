//! The Hailuo upload side (protocol section 7): `request_policy` hands out
//! temporary credentials per token, an OSS bucket (path style, at this
//! simulator's own address) checks every PUT's V1 signature and security
//! token and keeps the bytes, and `policy_callback` turns a stored object of
//! the stated size into a `fileID`. A chat `form` must reference those ids
//! (`check_form`); the answer then states each file's SHA-256, so a test can
//! prove which bytes arrived.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State as AxState};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha1::Sha1;
use sha2::{Digest, Sha256};

use crate::checks::fingerprint;
use crate::hailuo::verify_json;
use crate::{envelope, failure, Shared, CODE_TOKEN_EXPIRED, EXPIRED};

pub const BUCKET: &str = "hailuo-sim";

/// Credentials handed out, objects stored, files registered.
#[derive(Default)]
pub struct Uploads {
    /// access key id → (secret, security token, token)
    keys: HashMap<String, (String, String, String)>,
    /// `<dir>/<fileName>` → (bytes, content type, token)
    objects: HashMap<String, (Bytes, String, String)>,
    /// fileID → what was registered
    pub files: HashMap<String, Value>,
    next: u64,
}

fn random_hex(n: usize) -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    (0..n)
        .map(|_| format!("{:x}", rng.random_range(0..16u8)))
        .collect()
}

pub async fn request_policy(
    AxState(st): AxState<Shared>,
    method: Method,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    let path = "/v1/api/files/request_policy";
    let token = match verify_json(&st, &method, path, &headers, q.as_deref(), &body) {
        Ok(t) => t,
        Err(r) => return r.into_response(),
    };
    let mut s = st.lock().unwrap();
    if s.expired.contains(&token) {
        return failure(CODE_TOKEN_EXPIRED, EXPIRED);
    }
    let host = headers
        .get("host")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("127.0.0.1")
        .to_string();
    let (id, secret, security) = (
        format!("STS.sim{}", random_hex(12)),
        random_hex(30),
        format!("CAIS{}", random_hex(40)),
    );
    s.uploads.keys.insert(
        id.clone(),
        (secret.clone(), security.clone(), token.clone()),
    );
    envelope(
        0,
        "成功",
        json!({"accessKeyId": id, "accessKeySecret": secret, "bucketName": BUCKET,
            "dir": format!("cdn-yingshi-ai-com/prod/sim/{}", fingerprint(&token)),
            "endpoint": format!("http://{host}"), "securityToken": security}),
    )
}

/// What OSS answers for a refused request.
fn oss_error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        [("content-type", "application/xml")],
        format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message></Error>"),
    )
        .into_response()
}

pub async fn put_object(
    AxState(st): AxState<Shared>,
    Path(key): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let header = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let path = format!("/{BUCKET}/{key}");
    let mut s = st.lock().unwrap();
    let auth = header("authorization");
    let Some((id, signature)) = auth
        .strip_prefix("OSS ")
        .and_then(|rest| rest.split_once(':'))
    else {
        s.violation("PUT", &path, "", format!("OSS `Authorization` is {auth:?}"));
        return oss_error(StatusCode::FORBIDDEN, "AccessDenied", "no OSS signature");
    };
    let Some((secret, security, token)) = s.uploads.keys.get(id).cloned() else {
        s.violation(
            "PUT",
            &path,
            "",
            "an access key id the policy did not hand out",
        );
        return oss_error(StatusCode::FORBIDDEN, "InvalidAccessKeyId", "unknown key");
    };
    let (content_type, date) = (header("content-type"), header("date"));
    let mut problems = Vec::new();
    if header("x-oss-security-token") != security {
        problems.push("`x-oss-security-token` is not the policy's securityToken".to_string());
    }
    if content_type.is_empty() || !date.ends_with(" GMT") {
        problems.push(format!(
            "a PUT needs `Content-Type` and an HTTP `Date` (got {content_type:?}, {date:?})"
        ));
    }
    let to_sign = format!(
        "PUT\n{}\n{content_type}\n{date}\nx-oss-security-token:{security}\n{path}",
        header("content-md5")
    );
    let mut mac = Hmac::<Sha1>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(to_sign.as_bytes());
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    if signature != expected {
        problems.push(format!(
            "OSS signature {signature:?}, expected {expected:?}"
        ));
    }
    if !problems.is_empty() {
        for p in problems {
            s.violation("PUT", &path, &token, p);
        }
        return oss_error(StatusCode::FORBIDDEN, "SignatureDoesNotMatch", "refused");
    }
    if s.take_upload_fault(&token).is_some() {
        return oss_error(
            StatusCode::FORBIDDEN,
            "AccessDenied",
            "The bucket you access does not belong to you.",
        );
    }
    s.uploads.objects.insert(key, (body, content_type, token));
    StatusCode::OK.into_response()
}

pub async fn policy_callback(
    AxState(st): AxState<Shared>,
    method: Method,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    let path = "/v1/api/files/policy_callback";
    let token = match verify_json(&st, &method, path, &headers, q.as_deref(), &body) {
        Ok(t) => t,
        Err(r) => return r.into_response(),
    };
    let b: Value = serde_json::from_slice(&body).unwrap_or_default();
    let field = |n: &str| b.get(n).and_then(Value::as_str).unwrap_or("").to_string();
    let mut s = st.lock().unwrap();
    let key = format!("{}/{}", field("dir"), field("fileName"));
    let mut problems = Vec::new();
    for n in [
        "fileName",
        "originFileName",
        "dir",
        "endpoint",
        "bucketName",
        "size",
        "mimeType",
    ] {
        if b.get(n).and_then(Value::as_str).is_none() {
            problems.push(format!("the callback's `{n}` is missing or not a string"));
        }
    }
    if field("bucketName") != BUCKET {
        problems.push(format!(
            "the callback names bucket {:?}",
            field("bucketName")
        ));
    }
    match s.uploads.objects.get(&key) {
        None => problems.push(format!("no object {key} was uploaded")),
        Some((bytes, content_type, owner)) => {
            if owner != &token {
                problems.push("the object was uploaded with another token's policy".into());
            }
            if field("size") != bytes.len().to_string() {
                problems.push(format!(
                    "the callback says size {:?}, the object has {} bytes",
                    field("size"),
                    bytes.len()
                ));
            }
            if &field("mimeType") != content_type {
                problems.push(format!(
                    "the callback's mimeType {:?} is not the PUT's Content-Type {content_type:?}",
                    field("mimeType")
                ));
            }
        }
    }
    if !problems.is_empty() {
        for p in problems {
            s.violation("POST", path, &token, p);
        }
        return failure(1_000_400, "参数错误");
    }
    let (bytes, mime, _) = s.uploads.objects[&key].clone();
    s.uploads.next += 1;
    let file_id = (318_000_000_000_000_000u64 + s.uploads.next).to_string();
    let record = json!({
        "fileID": file_id, "fileName": field("fileName"), "originFileName": field("originFileName"),
        "mimeType": mime, "size": bytes.len(), "sha256": hex(&Sha256::digest(&bytes)),
        "token_fp": fingerprint(&token),
    });
    s.uploads.files.insert(file_id.clone(), record);
    envelope(0, "成功", json!({"fileID": file_id}))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A chat's `form`: the files it references (their records), or what is
/// wrong with it. Files come first, one per entry, then the text.
pub fn check_form(
    uploads: &Uploads,
    form: &str,
    token: &str,
    content: &str,
) -> Result<Vec<Value>, String> {
    let entries: Vec<Value> =
        serde_json::from_str(form).map_err(|e| format!("`form` is not a JSON array: {e}"))?;
    let Some((text, files)) = entries.split_last() else {
        return Err("`form` is empty".into());
    };
    if text["formType"] != 1 || text["content"] != content || text["name"] != "" {
        return Err(format!(
            "`form` must end with {{\"name\":\"\",\"formType\":1,\"content\":<msgContent>}}, got {text}"
        ));
    }
    if files.is_empty() {
        return Err("`form` references no file".into());
    }
    let mut found = Vec::new();
    for entry in files {
        let id = entry["fileID"].as_str().unwrap_or_default();
        let Some(record) = uploads.files.get(id) else {
            return Err(format!("`form` references unknown fileID {id:?}"));
        };
        if record["token_fp"] != fingerprint(token) {
            return Err(format!("fileID {id} was uploaded by another account"));
        }
        if entry["content"] != record["fileName"] || entry["name"] != "" {
            return Err(format!(
                "the entry of fileID {id} must carry its fileName as `content`"
            ));
        }
        let image = record["mimeType"]
            .as_str()
            .unwrap_or_default()
            .starts_with("image/");
        let expected = if image { 2 } else { 6 };
        if entry["formType"] != expected {
            return Err(format!(
                "fileID {id} ({}) must be formType {expected}, got {}",
                record["mimeType"], entry["formType"]
            ));
        }
        found.push(record.clone());
    }
    Ok(found)
}
