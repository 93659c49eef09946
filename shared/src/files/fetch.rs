//! Downloading a caller's URL without letting it reach inside the AWS
//! account the function runs in.
//!
//! The function runs inside our users' accounts, where 169.254.169.254 hands
//! out credentials and the Lambda Runtime API listens on 127.0.0.1:9001. A
//! URL is refused when its host is, or resolves to, an address that is not
//! publicly routable (loopback, private, link-local, unique-local, CGNAT,
//! multicast, unspecified, reserved, or an IPv6 form that embeds an IPv4
//! address), however it is spelled: the URL parser normalizes decimal, octal,
//! hex and short IPv4 forms and IPv6 literals before the check. Names are
//! resolved once, by the client's own resolver, which hands the connector only
//! vetted addresses (so a name cannot resolve to one address when checked and
//! another when connected). IP-literal URLs never reach a resolver, so they
//! are checked before the request and at every redirect hop, with the hops
//! capped. `FILE_URL_ALLOW_PRIVATE=true` lifts the address rule, for local
//! testing only.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::Url;

/// The most redirects followed.
pub(crate) const MAX_REDIRECTS: usize = 5;

/// Why a URL was not fetched. Messages never repeat the URL's credentials or
/// query: they name the scheme, host and port at most.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum FetchError {
    /// The URL may not be fetched (scheme, address, malformed).
    #[error("{0}")]
    Refused(String),
    /// The server answered with a failure status.
    #[error("the server answered HTTP {0}")]
    Status(u16),
    /// More bytes than allowed.
    #[error("the file is larger than {0} bytes")]
    TooLarge(u64),
    #[error("{0}")]
    Unreachable(String),
}

/// Why an address may not be fetched from, or `None` when it is public.
pub(crate) fn forbidden(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => forbidden_v6(v6),
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b) {
        (127, _) => "a loopback address",
        (10, _) | (172, 16..=31) | (192, 168) => "a private address",
        (169, 254) => "a link-local address (the instance metadata service lives there)",
        (100, 64..=127) => "a carrier-grade NAT address",
        (0, _) => "an unspecified (\"this network\") address",
        (224..=239, _) => "a multicast address",
        (240..=255, _) => "a reserved or broadcast address",
        (192, 0) if c == 0 => "an IETF protocol address",
        (198, 18..=19) => "a benchmarking address",
        _ => return None,
    })
}

fn forbidden_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    if ip.is_loopback() {
        return Some("a loopback address");
    }
    if ip.is_unspecified() {
        return Some("an unspecified address");
    }
    Some(match s[0] {
        0xff00..=0xffff => "a multicast address",
        0xfe80..=0xfebf => "a link-local address",
        0xfec0..=0xfeff => "a site-local address",
        0xfc00..=0xfdff => "a unique-local address",
        // ::ffff:a.b.c.d (mapped) and ::a.b.c.d (compatible).
        0 if s[1..5] == [0, 0, 0, 0] && (s[5] == 0xffff || s[5] == 0) => {
            "an IPv4-mapped or IPv4-compatible address"
        }
        // 64:ff9b::/96 (NAT64), 2002::/16 (6to4) and 2001::/32 (Teredo) embed
        // an IPv4 address a gateway would reach.
        0x64 if s[1] == 0xff9b => "a NAT64 address",
        0x2002 => "a 6to4 address",
        0x2001 if s[1] == 0 => "a Teredo address",
        _ => return None,
    })
}

/// The URL as it may be shown: scheme, host and port, nothing else.
pub(crate) fn shown(url: &Url) -> String {
    match (url.host_str(), url.port()) {
        (Some(h), Some(p)) => format!("{}://{h}:{p}", url.scheme()),
        (Some(h), None) => format!("{}://{h}", url.scheme()),
        _ => format!("a {} URL", url.scheme()),
    }
}

/// Which addresses are refused, and why: `forbidden`, or nothing when
/// private addresses are allowed (tests swap in their own).
pub(crate) type Rule = fn(IpAddr) -> Option<&'static str>;

fn anything_goes(_: IpAddr) -> Option<&'static str> {
    None
}

/// The checks a URL passes before any connection: scheme, and the host when
/// it is an address.
pub(crate) fn check_url(url: &Url, rule: Rule) -> Result<(), FetchError> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(FetchError::Refused(format!(
            "only http and https URLs can be fetched, not {}:",
            url.scheme()
        )));
    }
    let ip = match url.host() {
        None => return Err(FetchError::Refused("the URL has no host".into())),
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip),
        Some(url::Host::Domain(_)) => return Ok(()),
    };
    match rule(ip) {
        Some(why) => Err(FetchError::Refused(format!(
            "{} is {why}; only public addresses can be fetched",
            shown(url)
        ))),
        None => Ok(()),
    }
}

/// How names are looked up: the system resolver, or a table in tests.
pub(crate) type Lookup = Arc<
    dyn Fn(String) -> futures_util::future::BoxFuture<'static, std::io::Result<Vec<SocketAddr>>>
        + Send
        + Sync,
>;

pub(crate) fn system_lookup() -> Lookup {
    Arc::new(|host: String| {
        Box::pin(async move { Ok(tokio::net::lookup_host((host.as_str(), 0)).await?.collect()) })
    })
}

/// The resolver the client connects through: every address of a name is
/// checked, and the connector only ever sees the ones that pass.
struct VettingResolver {
    lookup: Lookup,
    rule: Rule,
}

impl VettingResolver {
    /// The addresses of `host`, all of them allowed, or why not.
    async fn vetted(
        lookup: Lookup,
        rule: Rule,
        host: String,
    ) -> Result<Vec<SocketAddr>, Box<dyn std::error::Error + Send + Sync>> {
        let addrs = lookup(host.clone()).await?;
        if addrs.is_empty() {
            return Err(format!("{host} does not resolve").into());
        }
        // One bad address refuses the name: a name that mixes public and
        // private addresses is an attack, not a mirror.
        if let Some(why) = addrs.iter().find_map(|a| rule(a.ip())) {
            return Err(Box::new(Refusal(format!(
                "{host} resolves to {why}; only public addresses can be fetched"
            ))));
        }
        Ok(addrs)
    }
}

impl Resolve for VettingResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let (lookup, rule) = (self.lookup.clone(), self.rule);
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs = Self::vetted(lookup, rule, host).await?;
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// A resolver's refusal, found again in the error chain.
#[derive(Debug)]
struct Refusal(String);

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refusal {}

/// Downloads with the rules above; one per execution environment.
#[derive(Clone)]
pub(crate) struct Fetcher {
    client: reqwest::Client,
    rule: Rule,
    max_bytes: u64,
}

impl Fetcher {
    pub(crate) fn from_config(config: &crate::config::Config) -> Result<Self, String> {
        let rule = if config.file_url_allow_private {
            anything_goes
        } else {
            forbidden
        };
        Self::with_rule(
            rule,
            config.file_max_bytes,
            config.file_connect_timeout,
            config.file_fetch_timeout,
            system_lookup(),
        )
    }

    pub(crate) fn with_rule(
        rule: Rule,
        max_bytes: u64,
        connect_timeout: Duration,
        total_timeout: Duration,
        lookup: Lookup,
    ) -> Result<Self, String> {
        let policy = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() >= MAX_REDIRECTS {
                return attempt.error(Refusal(format!("more than {MAX_REDIRECTS} redirects")));
            }
            match check_url(attempt.url(), rule) {
                Ok(()) => attempt.follow(),
                Err(e) => {
                    let message = format!("a redirect: {e}");
                    attempt.error(Refusal(message))
                }
            }
        });
        let client = reqwest::Client::builder()
            .use_rustls_tls()
            .connect_timeout(connect_timeout)
            .timeout(total_timeout)
            .redirect(policy)
            .no_proxy()
            .dns_resolver(Arc::new(VettingResolver { lookup, rule }))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Self {
            client,
            rule,
            max_bytes,
        })
    }

    /// The body of `url` and its declared content type; at most `max_bytes`,
    /// counted while reading (a lying or missing Content-Length changes nothing).
    pub(crate) async fn fetch(&self, url: &Url) -> Result<(Bytes, Option<String>), FetchError> {
        check_url(url, self.rule)?;
        let response = self
            .client
            .get(url.clone())
            .send()
            .await
            .map_err(|e| classify(e, url))?;
        let status = response.status();
        if !status.is_success() {
            return Err(FetchError::Status(status.as_u16()));
        }
        let declared = response.content_length();
        if declared.is_some_and(|n| n > self.max_bytes) {
            return Err(FetchError::TooLarge(self.max_bytes));
        }
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        // Sized once when the length is declared: a growing buffer would hold
        // the old and the new copy at once while it doubles.
        let mut body = BytesMut::with_capacity(declared.unwrap_or(0) as usize);
        let mut stream = response.bytes_stream();
        while let Some(piece) = stream.next().await {
            let piece = piece.map_err(|e| classify(e, url))?;
            if body.len() as u64 + piece.len() as u64 > self.max_bytes {
                return Err(FetchError::TooLarge(self.max_bytes));
            }
            body.extend_from_slice(&piece);
        }
        Ok((body.freeze(), content_type))
    }
}

/// A client error in words that name no more of the URL than `shown`.
fn classify(e: reqwest::Error, url: &Url) -> FetchError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(cause) = source {
        if let Some(refusal) = cause.downcast_ref::<Refusal>() {
            return FetchError::Refused(refusal.0.clone());
        }
        source = cause.source();
    }
    if e.is_timeout() {
        return FetchError::Unreachable(format!("{} did not answer in time", shown(url)));
    }
    FetchError::Unreachable(format!("{} could not be reached", shown(url)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn address_classes() {
        for bad in [
            "127.0.0.1",
            "127.255.0.9",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "240.0.0.1",
            "192.0.0.1",
            "198.18.0.1",
            "::1",
            "::",
            "fe80::1",
            "fc00::1",
            "fd12:3456::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:a9fe:a9fe::1",
            "2001:0:4136:e378::1",
            "fec0::1",
        ] {
            assert!(forbidden(v(bad)).is_some(), "{bad} must be refused");
        }
        for good in [
            "8.8.8.8",
            "1.1.1.1",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700::1111",
            "2a00:1450::1",
        ] {
            assert_eq!(forbidden(v(good)), None, "{good} is public");
        }
    }

    /// A lookup from a table; names not in it do not exist.
    fn table(entries: &[(&str, &str)]) -> Lookup {
        let map: std::collections::HashMap<String, Vec<SocketAddr>> = entries
            .iter()
            .map(|(h, ip)| (h.to_string(), vec![SocketAddr::new(v(ip), 0)]))
            .collect();
        Arc::new(move |host: String| {
            let found = map.get(&host).cloned();
            Box::pin(async move { found.ok_or_else(|| std::io::Error::other("no such host")) })
        })
    }

    /// Hostile URLs refused with a reason, checked where no connection can be
    /// made even if the check were wrong: literal addresses by `check_url`,
    /// names by the vetting resolver over a table.
    #[tokio::test]
    async fn hostile_urls_are_refused_with_a_reason() {
        let literals = [
            "http://127.0.0.1:9001/2018-06-01/runtime/invocation/next",
            "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
            "http://2130706433/",
            "http://0x7f000001/",
            "http://0177.0.0.1/",
            "http://127.1/",
            "http://0x7f.1/",
            "http://2852039166/latest/meta-data/",
            "http://0xA9FEA9FE/",
            "http://0251.0376.0251.0376/",
            "http://[::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:a9fe:a9fe]/",
            "http://[fe80::1]/",
            "http://[fd00::1]/",
            "http://0.0.0.0/",
            "http://10.0.0.1/",
            "http://192.168.0.1/",
            "http://100.100.100.200/",
            "http://[ff02::1]/",
            "http://user:secret@127.0.0.1/?token=hunter2",
            "file:///etc/passwd",
            "ftp://example.com/x",
            "gopher://127.0.0.1:9001/",
        ];
        for raw in literals {
            let url = Url::parse(raw).unwrap();
            let e = check_url(&url, forbidden).unwrap_err();
            let FetchError::Refused(message) = &e else {
                panic!("{raw}: expected a refusal, got {e:?}");
            };
            assert!(
                !message.contains("secret") && !message.contains("hunter2"),
                "{message}"
            );
        }
        let lookup = table(&[
            ("metadata.internal.test", "169.254.169.254"),
            ("localhost", "127.0.0.1"),
            ("localhost.", "127.0.0.1"),
            ("private.test", "10.0.0.5"),
            ("v6loop.test", "::1"),
            ("mapped.test", "::ffff:10.0.0.1"),
            ("public.test", "93.184.215.14"),
        ]);
        for host in [
            "metadata.internal.test",
            "localhost",
            "localhost.",
            "private.test",
            "v6loop.test",
            "mapped.test",
        ] {
            let url = Url::parse(&format!("http://{host}/x")).unwrap();
            assert_eq!(
                check_url(&url, forbidden),
                Ok(()),
                "names pass the URL check"
            );
            let e = VettingResolver::vetted(lookup.clone(), forbidden, host.into())
                .await
                .unwrap_err();
            assert!(e.to_string().contains("resolves to"), "{host}: {e}");
        }
        let ok = VettingResolver::vetted(lookup, forbidden, "public.test".into()).await;
        assert_eq!(ok.unwrap().len(), 1);
    }

    /// End to end through the client, on loopback only: a test rule refuses
    /// 127.0.0.2 (still loopback), and a server on 127.0.0.1 redirects there.
    #[tokio::test]
    async fn redirects_are_checked_at_every_hop_and_sizes_while_reading() {
        use axum::response::Redirect;
        use axum::routing::get;
        fn not_two(ip: IpAddr) -> Option<&'static str> {
            (ip == IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2))).then_some("a test-forbidden address")
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let app = axum::Router::new()
            .route("/file", get(|| async { "hello" }))
            .route("/big", get(|| async { "x".repeat(5000) }))
            .route(
                "/missing",
                get(|| async { (axum::http::StatusCode::NOT_FOUND, "no") }),
            )
            .route(
                "/away",
                get(move || async move {
                    Redirect::temporary(&format!("http://127.0.0.2:{port}/file"))
                }),
            )
            .route("/loop", get(|| async { Redirect::temporary("/loop") }))
            .route(
                "/named",
                get(move || async move {
                    Redirect::temporary(&format!("http://inside.test:{port}/file"))
                }),
            );
        tokio::spawn(async move { axum::serve(listener, app).await });
        let f = Fetcher::with_rule(
            not_two,
            4096,
            Duration::from_secs(2),
            Duration::from_secs(5),
            table(&[("inside.test", "127.0.0.2")]),
        )
        .unwrap();
        let at = |path: &str| Url::parse(&format!("http://127.0.0.1:{port}{path}")).unwrap();
        let (body, _) = f.fetch(&at("/file")).await.unwrap();
        assert_eq!(&body[..], b"hello");
        for path in ["/away", "/named", "/loop"] {
            let e = f.fetch(&at(path)).await.unwrap_err();
            assert!(matches!(e, FetchError::Refused(_)), "{path}: {e:?}");
        }
        assert_eq!(
            f.fetch(&at("/big")).await.unwrap_err(),
            FetchError::TooLarge(4096)
        );
        assert_eq!(
            f.fetch(&at("/missing")).await.unwrap_err(),
            FetchError::Status(404)
        );
    }

    #[test]
    fn shown_urls_carry_no_credentials() {
        let url = Url::parse("https://user:pw@files.example.com:8443/a?sig=s").unwrap();
        assert_eq!(shown(&url), "https://files.example.com:8443");
    }
}
