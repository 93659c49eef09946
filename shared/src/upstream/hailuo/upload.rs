//! File upload (protocol section 7): a temporary policy for an Aliyun OSS
//! bucket, the bytes PUT there with OSS's V1 request signing, then the
//! callback that turns the object into a `fileID` the chat form references.

use base64::Engine;
use hmac::{Hmac, Mac};
use reqwest::Method;
use serde_json::{json, Value};
use sha1::Sha1;

use super::client::HailuoClient;
use crate::upstream::browser::failure_text;
use crate::upstream::{FileUpload, UpstreamError};

/// The longest a PUT of one file may take (100 MB at ~1 MB/s).
const UPLOAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// The temporary (STS) credentials `request_policy` hands out.
#[derive(Debug)]
struct Policy {
    access_key_id: String,
    access_key_secret: String,
    bucket: String,
    dir: String,
    endpoint: String,
    security_token: String,
}

impl Policy {
    fn from_data(data: &Value) -> Result<Self, UpstreamError> {
        let field = |name: &str| {
            data.get(name)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .ok_or_else(|| {
                    UpstreamError::Protocol(format!("the upload policy has no `{name}`"))
                })
        };
        Ok(Self {
            access_key_id: field("accessKeyId")?,
            access_key_secret: field("accessKeySecret")?,
            bucket: field("bucketName")?,
            dir: field("dir")?.trim_matches('/').to_string(),
            endpoint: field("endpoint")?,
            security_token: field("securityToken")?,
        })
    }
}

/// Where an object goes, as the official OSS SDKs build it: the endpoint's
/// scheme (https without one); path style for an IP address or `localhost`,
/// virtual-hosted style otherwise.
pub(crate) fn object_url(endpoint: &str, bucket: &str, key: &str) -> String {
    let (scheme, host) = match endpoint.split_once("://") {
        Some((scheme, host)) => (scheme, host),
        None => ("https", endpoint),
    };
    let host = host.trim_end_matches('/');
    let bare = host
        .rsplit_once(':')
        .filter(|(_, port)| port.chars().all(|c| c.is_ascii_digit()))
        .map_or(host, |(h, _)| h);
    let bare = bare.trim_start_matches('[').trim_end_matches(']');
    let path_style = bare == "localhost" || bare.parse::<std::net::IpAddr>().is_ok();
    if path_style {
        format!("{scheme}://{host}/{bucket}/{key}")
    } else {
        format!("{scheme}://{bucket}.{host}/{key}")
    }
}

/// `OSS <accessKeyId>:<signature>` for a PUT (V1): HMAC-SHA1 over the verb,
/// the (empty) Content-MD5, Content-Type, Date, the `x-oss-*` headers and the
/// resource `/<bucket>/<key>`.
pub(crate) fn authorization(
    access_key_id: &str,
    access_key_secret: &str,
    content_type: &str,
    date: &str,
    security_token: &str,
    resource: &str,
) -> String {
    let to_sign =
        format!("PUT\n\n{content_type}\n{date}\nx-oss-security-token:{security_token}\n{resource}");
    let mut mac = Hmac::<Sha1>::new_from_slice(access_key_secret.as_bytes())
        .expect("HMAC takes a key of any length");
    mac.update(to_sign.as_bytes());
    let signature = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    format!("OSS {access_key_id}:{signature}")
}

impl HailuoClient {
    /// Upload one file; the chat form's entry for it.
    pub(crate) async fn upload(
        &self,
        token: &str,
        file: &FileUpload,
    ) -> Result<Value, UpstreamError> {
        let data = self
            .call(token, Method::GET, "/v1/api/files/request_policy", None)
            .await?;
        let policy = Policy::from_data(&data)?;
        let file_name = format!("{}.{}", uuid::Uuid::new_v4(), file.extension);
        let key = format!("{}/{file_name}", policy.dir);
        let date = httpdate::fmt_http_date(std::time::SystemTime::now());
        let auth = authorization(
            &policy.access_key_id,
            &policy.access_key_secret,
            &file.mime,
            &date,
            &policy.security_token,
            &format!("/{}/{key}", policy.bucket),
        );
        let (http, _in_flight) = self.http.take();
        let response = http
            .put(object_url(&policy.endpoint, &policy.bucket, &key))
            .header("Content-Type", &file.mime)
            .header("Date", &date)
            .header("x-oss-security-token", &policy.security_token)
            .header("Authorization", auth)
            // `Bytes` is shared, not copied, into the request body.
            .body(file.bytes.clone())
            .timeout(UPLOAD_TIMEOUT)
            .send()
            .await?;
        if !response.status().is_success() {
            let status = response.status().as_u16();
            return Err(UpstreamError::Http {
                status,
                message: format!(
                    "the file store refused the upload: {}",
                    failure_text(response).await
                ),
            });
        }
        let callback = json!({
            "fileName": file_name,
            "originFileName": file.original_name,
            "dir": policy.dir,
            "endpoint": policy.endpoint,
            "bucketName": policy.bucket,
            "size": file.bytes.len().to_string(),
            "mimeType": file.mime,
        })
        .to_string();
        let data = self
            .call(
                token,
                Method::POST,
                "/v1/api/files/policy_callback",
                Some(&callback),
            )
            .await?;
        let file_id = match data.get("fileID") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => {
                return Err(UpstreamError::Protocol(
                    "the upload callback named no fileID".into(),
                ))
            }
        };
        Ok(json!({
            "name": "",
            "formType": if file.image { 2 } else { 6 },
            "content": file_name,
            "fileID": file_id,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_urls_follow_the_sdks_rules() {
        assert_eq!(
            object_url("oss-cn-wulanchabu.aliyuncs.com", "b", "d/f.pdf"),
            "https://b.oss-cn-wulanchabu.aliyuncs.com/d/f.pdf"
        );
        assert_eq!(
            object_url("http://oss.example.com", "b", "d/f.pdf"),
            "http://b.oss.example.com/d/f.pdf"
        );
        assert_eq!(
            object_url("http://127.0.0.1:18080", "b", "d/f.pdf"),
            "http://127.0.0.1:18080/b/d/f.pdf"
        );
        assert_eq!(
            object_url("localhost:9000", "b", "k"),
            "https://localhost:9000/b/k"
        );
        assert_eq!(
            object_url("http://[::1]:80/", "b", "k"),
            "http://[::1]:80/b/k"
        );
    }

    #[test]
    fn v1_signature_matches_a_worked_example() {
        // HMAC-SHA1 of the string to sign, computed independently:
        // printf 'PUT\n\nimage/png\nWed, 26 Nov 2026 00:00:00 GMT\nx-oss-security-token:tok\n/b/d/f.png'
        //   | openssl dgst -sha1 -hmac secret -binary | base64
        let auth = authorization(
            "STS.id",
            "secret",
            "image/png",
            "Wed, 26 Nov 2026 00:00:00 GMT",
            "tok",
            "/b/d/f.png",
        );
        assert_eq!(auth, "OSS STS.id:+K6clS1i+xSpwop+gMYeYIsj+1w=");
    }
}
