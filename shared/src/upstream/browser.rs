//! What both web backends expect of a browser: one pooled HTTP client, the
//! desktop Chrome fingerprint headers with the (sensitive) `token` header, and
//! answers read through their envelope.

use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, ACCEPT, CONTENT_TYPE};
use serde_json::Value;

use super::envelope::{id_of, open_envelope, MAX_ERROR_TEXT};
use super::UpstreamError;
use crate::redact::fingerprint;
use crate::settings::Lookup;
use crate::text::summarize_body;

/// The browser an adapter's web app runs in, as the upstream sees it: its
/// origin and the desktop Chrome fingerprint headers. Every value drifts
/// upstream, so each is a setting (`<PREFIX>_ORIGIN`, `_USER_AGENT`,
/// `_SEC_CH_UA`, `_SEC_CH_UA_PLATFORM`) with the observed default.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrowserProfile {
    pub origin: String,
    pub user_agent: String,
    pub sec_ch_ua: String,
    pub sec_ch_ua_platform: String,
}

impl BrowserProfile {
    /// `defaults` is (origin, user agent, sec-ch-ua, sec-ch-ua-platform).
    pub fn from_lookup(env: &Lookup<'_>, prefix: &str, defaults: [&str; 4]) -> Self {
        let [origin, user_agent, sec_ch_ua, platform] = defaults;
        let text = |key: &str, default: &str| env.text(&format!("{prefix}_{key}"), default);
        Self {
            origin: text("ORIGIN", origin).trim_end_matches('/').to_string(),
            user_agent: text("USER_AGENT", user_agent),
            sec_ch_ua: text("SEC_CH_UA", sec_ch_ua),
            sec_ch_ua_platform: text("SEC_CH_UA_PLATFORM", platform),
        }
    }

    /// The headers' values for a page at `referer`.
    pub fn at<'a>(&'a self, referer: &'a str) -> Fingerprint<'a> {
        Fingerprint {
            origin: &self.origin,
            referer,
            user_agent: &self.user_agent,
            sec_ch_ua: &self.sec_ch_ua,
            sec_ch_ua_platform: &self.sec_ch_ua_platform,
        }
    }
}

/// The fingerprint headers' values for one call.
pub struct Fingerprint<'a> {
    pub origin: &'a str,
    pub referer: &'a str,
    pub user_agent: &'a str,
    pub sec_ch_ua: &'a str,
    pub sec_ch_ua_platform: &'a str,
}

/// The client an adapter keeps for its lifetime. HTTP/2 is negotiated by ALPN
/// over TLS (rustls); plain http stays HTTP/1.1.
///
/// Proxies come from the environment (`HTTPS_PROXY`, `HTTP_PROXY`,
/// `ALL_PROXY`, `NO_PROXY`, as reqwest reads them). The trusted roots are
/// the bundled Mozilla set, plus every certificate in `SSL_CERT_FILE` (a PEM
/// bundle) when it is set: a TLS-intercepting corporate proxy's CA, or a
/// test CA. A file that cannot be read or holds no certificate is an error at
/// start-up, not a silent fall-back to the bundled roots.
pub fn http_client() -> Result<reqwest::Client, BoxError> {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .pool_idle_timeout(Duration::from_secs(60))
        .tcp_nodelay(true);
    for root in extra_roots(std::env::var_os("SSL_CERT_FILE"))? {
        builder = builder.add_root_certificate(root);
    }
    Ok(builder.build()?)
}

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// `UPSTREAM_STREAMS_PER_CONNECTION` (64), the same for both upstreams.
pub fn streams_per_connection(env: &Lookup<'_>) -> usize {
    env.number("UPSTREAM_STREAMS_PER_CONNECTION", 64)
        .clamp(1, 1_000) as usize
}

/// The most connections to one upstream origin (clients, each with its own
/// pool); past them all, a request waits on the least busy.
const MAX_CONNECTIONS: usize = 32;

/// An adapter's clients, each its own connection per origin. hyper (under
/// reqwest) keeps one HTTP/2 connection per origin and, once the server's
/// `SETTINGS_MAX_CONCURRENT_STREAMS` are open on it, queues every further
/// request behind them instead of opening a second (hyperium/hyper#2197).
/// A Lambda environment carries one request at a time, but the self-hosted
/// server carries hundreds: behind an upstream allowing 2 streams, a third
/// chat got its first byte only when one of the first two ended. So a request
/// takes the first client with fewer than `per_connection` requests in
/// flight: a lone request (Lambda's) always reuses the first, warm
/// connection, and a busy server opens more as it needs them. The upstreams'
/// limit is not published (100 or 128 is usual for HTTP/2 servers), so the
/// default stays under it; `UPSTREAM_STREAMS_PER_CONNECTION` sets it.
pub struct Connections {
    slots: Box<[Slot]>,
    per_connection: usize,
}

struct Slot {
    client: std::sync::OnceLock<reqwest::Client>,
    in_flight: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

/// One request in flight on a connection, until dropped: held while its
/// answer is read (for a stream, by the stream, [`InFlight::hold`]).
pub struct InFlight(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl InFlight {
    /// `stream`, holding this mark until it ends or is dropped.
    pub fn hold<S: futures_util::Stream>(
        self,
        stream: S,
    ) -> impl futures_util::Stream<Item = S::Item> {
        use futures_util::StreamExt;
        stream.map(move |item| {
            self.keep();
            item
        })
    }

    fn keep(&self) {}
}

impl Connections {
    /// The first client is built now, so a bad `SSL_CERT_FILE` stops the
    /// start; the others when first needed, the same way.
    pub fn new(per_connection: usize) -> Result<Self, BoxError> {
        let first = http_client()?;
        let slots = (0..MAX_CONNECTIONS)
            .map(|i| Slot {
                client: match i {
                    0 => std::sync::OnceLock::from(first.clone()),
                    _ => std::sync::OnceLock::new(),
                },
                in_flight: Default::default(),
            })
            .collect();
        Ok(Self {
            slots,
            per_connection,
        })
    }

    /// A client for one request, and the mark that it is in flight.
    pub fn take(&self) -> (reqwest::Client, InFlight) {
        use std::sync::atomic::Ordering::Relaxed;
        let busy = |slot: &&Slot| slot.in_flight.load(Relaxed);
        let slot = match self.slots.iter().find(|s| busy(s) < self.per_connection) {
            Some(slot) => slot,
            None => self.slots.iter().min_by_key(busy).unwrap_or(&self.slots[0]),
        };
        slot.in_flight.fetch_add(1, Relaxed);
        let client = slot.client.get_or_init(|| {
            // It was built once already, from the same settings.
            http_client()
                .unwrap_or_else(|_| self.slots[0].client.get().cloned().unwrap_or_default())
        });
        (client.clone(), InFlight(slot.in_flight.clone()))
    }
}

fn extra_roots(path: Option<std::ffi::OsString>) -> Result<Vec<reqwest::Certificate>, BoxError> {
    let Some(path) = path.filter(|p| !p.is_empty()) else {
        return Ok(vec![]);
    };
    let shown = std::path::Path::new(&path).display().to_string();
    let pem =
        std::fs::read(&path).map_err(|e| format!("SSL_CERT_FILE {shown} cannot be read: {e}"))?;
    let roots = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| format!("SSL_CERT_FILE {shown} is not a PEM bundle: {e}"))?;
    if roots.is_empty() {
        return Err(format!("SSL_CERT_FILE {shown} holds no certificate").into());
    }
    Ok(roots)
}

/// Set a header; a value that cannot be sent is left out.
pub fn put(headers: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(HeaderName::from_static(name), v);
    }
}

/// The fingerprint headers, `accept`, and `token` (marked sensitive, so it is
/// never logged). A token that cannot be sent as a header is unusable.
pub fn headers(
    token: &str,
    fp: &Fingerprint<'_>,
    accept: &'static str,
) -> Result<HeaderMap, UpstreamError> {
    let mut token_value =
        HeaderValue::from_str(token).map_err(|_| UpstreamError::InvalidToken {
            fingerprint: fingerprint(token),
            message: "the token contains characters that cannot be sent in an HTTP header".into(),
        })?;
    token_value.set_sensitive(true);
    let mut h = HeaderMap::new();
    put(&mut h, "referer", fp.referer);
    put(&mut h, "origin", fp.origin);
    put(&mut h, "user-agent", fp.user_agent);
    put(&mut h, "sec-ch-ua", fp.sec_ch_ua);
    put(&mut h, "sec-ch-ua-mobile", "?0");
    put(&mut h, "sec-ch-ua-platform", fp.sec_ch_ua_platform);
    put(&mut h, "sec-fetch-dest", "empty");
    put(&mut h, "sec-fetch-mode", "cors");
    put(&mut h, "sec-fetch-site", "same-origin");
    put(&mut h, "accept-language", "zh-CN,zh;q=0.9,en;q=0.8");
    h.insert(ACCEPT, HeaderValue::from_static(accept));
    h.insert(HeaderName::from_static("token"), token_value);
    Ok(h)
}

/// A signed JSON call (both upstreams sign and send them the same way once
/// the request is addressed and its headers built): `body`, if any, sent as
/// JSON; the answer's envelope opened.
pub async fn send_json(
    request: reqwest::RequestBuilder,
    timeout: Duration,
    body: Option<&str>,
) -> Result<Value, UpstreamError> {
    let mut request = request.timeout(timeout);
    if let Some(body) = body {
        request = request
            .header(CONTENT_TYPE, "application/json")
            .body(body.to_string());
    }
    read_envelope(request.send().await?).await
}

/// What `/v1/api/user/device/register` (the same on both upstreams)
/// answered: the new device's id and the whole `data`. A failure code means
/// the upstream will not register a device for the token: it is dead.
pub fn registered_device(
    answer: Result<Value, UpstreamError>,
    token: &str,
) -> Result<(String, Value), UpstreamError> {
    let data = answer.map_err(|e| match e {
        UpstreamError::Api { message, .. } => UpstreamError::TokenRejected {
            fingerprint: fingerprint(token),
            message,
        },
        other => other,
    })?;
    let device_id = id_of(data.get("deviceIDStr")).ok_or_else(|| {
        UpstreamError::Protocol("device registration answered without deviceIDStr".into())
    })?;
    tracing::info!(token = %fingerprint(token), "registered a device");
    Ok((device_id, data))
}

/// The most of an upstream answer read into memory where a small JSON
/// envelope is expected: a proxy's error page or a hostile answer cannot cost
/// more than this.
pub const MAX_ENVELOPE_BYTES: usize = 256 * 1024;

/// A JSON call's answer: a failing status, or the envelope opened.
pub async fn read_envelope(response: reqwest::Response) -> Result<Value, UpstreamError> {
    let status = response.status();
    let text = read_capped(response, MAX_ENVELOPE_BYTES).await?;
    if !status.is_success() {
        return Err(UpstreamError::from_status(
            status.as_u16(),
            summarize_body(&text, MAX_ERROR_TEXT),
        ));
    }
    open_envelope(&text)
}

/// A failed answer's body as an error can repeat it: read up to
/// `MAX_ENVELOPE_BYTES`, an HTML page named by its title, anything else clipped.
pub async fn failure_text(response: reqwest::Response) -> String {
    match read_capped(response, MAX_ENVELOPE_BYTES).await {
        Ok(text) => summarize_body(&text, MAX_ERROR_TEXT),
        Err(e) => format!("(the body could not be read: {e})"),
    }
}

/// The body as text, reading at most `max` bytes (the rest is dropped unread).
pub async fn read_capped(
    mut response: reqwest::Response,
    max: usize,
) -> Result<String, UpstreamError> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = max - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= max {
            break;
        }
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_takes_the_first_connection_with_room_then_the_least_busy() {
        let c = Connections::new(2).unwrap();
        let busy = |c: &Connections| -> Vec<usize> {
            c.slots
                .iter()
                .map(|s| s.in_flight.load(std::sync::atomic::Ordering::Relaxed))
                .take(4)
                .collect()
        };
        // One request at a time (a Lambda environment): always the first,
        // and no other client is built.
        for _ in 0..3 {
            let _one = c.take();
        }
        assert_eq!(busy(&c), [0, 0, 0, 0]);
        assert!(c.slots[1].client.get().is_none());
        // Past two in flight, the next connection; a freed place is reused.
        let a = c.take();
        let _b = c.take();
        let _c = c.take();
        assert_eq!(busy(&c), [2, 1, 0, 0]);
        assert!(c.slots[1].client.get().is_some() && c.slots[2].client.get().is_none());
        drop(a);
        let _d = c.take();
        assert_eq!(busy(&c), [2, 1, 0, 0]);
        // Every connection full: the least busy, the first of equals.
        let one = Connections::new(1).unwrap();
        let all: Vec<_> = (0..MAX_CONNECTIONS).map(|_| one.take()).collect();
        let _more = (one.take(), one.take());
        assert_eq!(busy(&one), [2, 2, 1, 1]);
        drop(all);
        // A stream holds its mark until it is dropped.
        let (_, mark) = c.take();
        assert_eq!(busy(&c), [2, 2, 0, 0]);
        let held = mark.hold(futures_util::stream::iter([1, 2]));
        assert_eq!(busy(&c), [2, 2, 0, 0]);
        drop(held);
        assert_eq!(busy(&c), [2, 1, 0, 0]);
        // The setting.
        assert_eq!(streams_per_connection(&Lookup::new(&|_| None)), 64);
        let zero = |_: &str| Some("0".to_string());
        assert_eq!(streams_per_connection(&Lookup::new(&zero)), 1);
    }

    /// A self-signed test CA (EC P-256), only ever parsed here.
    const TEST_CA: &str = "-----BEGIN CERTIFICATE-----
MIIBmjCCAT+gAwIBAgIUbwhUrcZwoWiKsvdEXUMUzxoRoPAwCgYIKoZIzj0EAwIw
ITEfMB0GA1UEAwwWaGFpbHVvLWdhdGV3YXkgdGVzdCBDQTAgFw0yNjExMjYwNzEz
MzVaGA8yMTI2MTEwMjA3MTMzNVowITEfMB0GA1UEAwwWaGFpbHVvLWdhdGV3YXkg
dGVzdCBDQTBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABOQEz4HNxXPBhGphcBxp
UCdEDugH4lrXDMnlaHNG5uP9P3mCByTVIIIZLVxXlOmqucJ/Szc1Pk17PsTeJGMW
5wajUzBRMB0GA1UdDgQWBBTx8jVON6JYt00vuDL7TgL5/zqhCDAfBgNVHSMEGDAW
gBTx8jVON6JYt00vuDL7TgL5/zqhCDAPBgNVHRMBAf8EBTADAQH/MAoGCCqGSM49
BAMCA0kAMEYCIQCLvlZgee7jPG7PLhwn/kpERg+DZxFmBLhGsC2ItVa2/gIhAJxD
wfYkUfH7hfRxHPm9UCBPntdPtPFYeuvPRvShIIhd
-----END CERTIFICATE-----";

    #[test]
    fn ssl_cert_file_adds_its_roots_and_a_bad_one_is_an_error() {
        assert!(extra_roots(None).unwrap().is_empty());
        assert!(extra_roots(Some("".into())).unwrap().is_empty());
        let dir = std::env::temp_dir().join(format!("gw-roots-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("ca.pem");
        std::fs::write(&good, format!("{TEST_CA}\n{TEST_CA}\n")).unwrap();
        assert_eq!(extra_roots(Some(good.into_os_string())).unwrap().len(), 2);
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let error = extra_roots(Some(empty.into_os_string()))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("empty.pem") && error.contains("no certificate"),
            "{error}"
        );
        let missing = dir.join("missing.pem");
        let error = extra_roots(Some(missing.into_os_string()))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("missing.pem") && error.contains("cannot be read"),
            "{error}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn token_is_sensitive_and_unsendable_tokens_are_invalid() {
        let fp = Fingerprint {
            origin: "https://o.example",
            referer: "https://o.example/",
            user_agent: "Chrome/1",
            sec_ch_ua: "x",
            sec_ch_ua_platform: "\"Windows\"",
        };
        let h = headers("tok", &fp, "*/*").unwrap();
        assert!(h["token"].is_sensitive());
        assert_eq!(h["origin"], "https://o.example");
        assert_eq!(h["accept"], "*/*");
        let e = headers("bad\ntoken", &fp, "*/*").unwrap_err();
        assert!(matches!(e, UpstreamError::InvalidToken { .. }));
        assert!(!e.to_string().contains("bad"));
    }
}
