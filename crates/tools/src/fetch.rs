//! `visit_website`'s fetcher: an HTTP(S) GET behind an SSRF guard, and the page as text.
//!
//! The guard decides on addresses, not spellings: the URL is parsed the WHATWG way (so
//! `http://2130706433/`, `http://0x7f.1/` and `http://0177.0.0.1/` are all 127.0.0.1), the
//! host is resolved, and every address it resolves to must be public ([`refused_class`]);
//! the connection then goes to the vetted address only (pinned, so a second DNS answer
//! cannot swap it), with no proxy. Redirects are followed by hand and every hop is vetted
//! again. The operator's allow-list (`host` or `host:port`) lets chosen internal hosts
//! through. Size and time are capped.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use reqwest::header::{CONTENT_TYPE, LOCATION, USER_AGENT};
use reqwest::redirect::Policy;
use url::Url;

/// Limits and the allow-list (defaults in brackets).
#[derive(Clone, Debug)]
pub struct FetchConfig {
    /// Hosts (`name`, `ip`, or either with `:port`) fetched even when internal [none].
    pub allow_hosts: Vec<String>,
    /// Most bytes read of a page [2 MiB]; the rest is cut.
    pub max_bytes: usize,
    /// Whole fetch, redirects included [10 s].
    pub timeout: Duration,
    /// Redirects followed [5].
    pub max_redirects: usize,
}

impl Default for FetchConfig {
    fn default() -> Self {
        FetchConfig {
            allow_hosts: Vec::new(),
            max_bytes: 2 << 20,
            timeout: Duration::from_secs(10),
            max_redirects: 5,
        }
    }
}

/// Why a URL was not fetched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    #[error("invalid URL: {0}")]
    Url(String),
    #[error("only http and https URLs can be visited, not `{0}:`")]
    Scheme(String),
    #[error("URLs with a user name or password are refused")]
    Credentials,
    #[error("`{host}` is {addr}, a {class} address: refused")]
    Refused {
        host: String,
        addr: IpAddr,
        class: &'static str,
    },
    #[error("could not resolve `{0}`")]
    Resolve(String),
    #[error("more than {0} redirects")]
    Redirects(usize),
    #[error("a redirect without a usable Location")]
    BadRedirect,
    #[error("the page did not arrive within {0} s")]
    Timeout(u64),
    #[error("fetch failed: {0}")]
    Http(String),
    #[error("the server answered {0}")]
    Status(u16),
    #[error("the body is larger than {0} bytes")]
    TooLarge(usize),
}

/// A fetched page.
#[derive(Clone, Debug, PartialEq)]
pub struct Page {
    /// The final URL, after redirects.
    pub url: String,
    pub status: u16,
    pub title: Option<String>,
    /// The readable text (HTML rendered as text; text types as they are).
    pub text: String,
    /// More than `max_bytes` arrived; the text covers the first part.
    pub truncated: bool,
}

/// Why `ip` may not be fetched (its class), or `None` for a public address.
pub fn refused_class(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => v4_class(v4),
        IpAddr::V6(v6) => v6_class(v6),
    }
}

fn v4_class(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        (0, _, _) => "unspecified (\"this network\")",
        (127, _, _) => "loopback",
        (10, _, _) | (192, 168, _) => "private",
        (172, b, _) if (16..32).contains(&b) => "private",
        (169, 254, _) => "link-local (cloud metadata)",
        (100, b, _) if (64..128).contains(&b) => "shared (carrier NAT)",
        (192, 0, 0) => "IETF protocol",
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "documentation",
        (198, 18 | 19, _) => "benchmarking",
        (a, _, _) if (224..240).contains(&a) => "multicast",
        (a, _, _) if a >= 240 => "reserved or broadcast",
        _ => return None,
    })
}

fn v6_class(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    if ip.is_unspecified() {
        return Some("unspecified");
    }
    if ip.is_loopback() {
        return Some("loopback");
    }
    // Addresses that carry an IPv4 address are judged by it: IPv4-mapped (::ffff:a.b.c.d),
    // NAT64 (64:ff9b::/96) and 6to4 (2002::/16). IPv4-compatible ones (::a.b.c.d) are
    // deprecated and refused outright.
    let embedded = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    if s[..5] == [0; 5] && s[5] == 0xffff {
        return v4_class(embedded(s[6], s[7]));
    }
    if s[..6] == [0; 6] {
        return Some("IPv4-compatible (deprecated)");
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return v4_class(embedded(s[6], s[7]));
    }
    if s[0] == 0x2002 {
        return v4_class(embedded(s[1], s[2]));
    }
    Some(match s[0] {
        x if x & 0xfe00 == 0xfc00 => "unique local (private)",
        x if x & 0xffc0 == 0xfe80 => "link-local",
        x if x & 0xffc0 == 0xfec0 => "site-local",
        x if x & 0xff00 == 0xff00 => "multicast",
        0x2001 if s[1] == 0 => "Teredo tunnel",
        0x2001 if s[1] == 0xdb8 => "documentation",
        0x0100 if s[1..4] == [0, 0, 0] => "discard",
        _ => return None,
    })
}

/// Fetches pages for one server: its limits and allow-list.
#[derive(Clone, Debug)]
pub struct Fetcher {
    cfg: FetchConfig,
}

impl Fetcher {
    pub fn new(cfg: FetchConfig) -> Self {
        Fetcher { cfg }
    }

    /// GETs `url` (following vetted redirects) and renders it as text.
    pub async fn fetch(&self, url: &str) -> Result<Page, FetchError> {
        let secs = self.cfg.timeout.as_secs().max(1);
        tokio::time::timeout(self.cfg.timeout, self.fetch_hops(url))
            .await
            .unwrap_or(Err(FetchError::Timeout(secs)))
    }

    /// GETs `url` behind the same guard and returns its body (an image, say): refused
    /// unless the answer is a success of at most `max_bytes`.
    pub async fn fetch_bytes(&self, url: &str, max_bytes: usize) -> Result<Vec<u8>, FetchError> {
        let secs = self.cfg.timeout.as_secs().max(1);
        let fetch = async {
            let (_, mut resp) = self.response(url).await?;
            if !resp.status().is_success() {
                return Err(FetchError::Status(resp.status().as_u16()));
            }
            if resp.content_length().is_some_and(|n| n > max_bytes as u64) {
                return Err(FetchError::TooLarge(max_bytes));
            }
            let mut body = Vec::new();
            while let Some(chunk) =
                (resp.chunk().await).map_err(|e| http_error(e, self.cfg.timeout))?
            {
                if body.len() + chunk.len() > max_bytes {
                    return Err(FetchError::TooLarge(max_bytes));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(body)
        };
        tokio::time::timeout(self.cfg.timeout, fetch)
            .await
            .unwrap_or(Err(FetchError::Timeout(secs)))
    }

    async fn fetch_hops(&self, raw: &str) -> Result<Page, FetchError> {
        let (url, resp) = self.response(raw).await?;
        self.read(url, resp).await
    }

    /// The first answer to `raw` that is not a redirect, every hop vetted.
    async fn response(&self, raw: &str) -> Result<(Url, reqwest::Response), FetchError> {
        let mut url = Url::parse(raw.trim()).map_err(|e| FetchError::Url(e.to_string()))?;
        for _ in 0..=self.cfg.max_redirects {
            let addr = self.vet(&url).await?;
            let resp = self.get(&url, addr).await?;
            if resp.status().is_redirection() {
                let next = resp
                    .headers()
                    .get(LOCATION)
                    .and_then(|l| l.to_str().ok())
                    .ok_or(FetchError::BadRedirect)?;
                url = url.join(next).map_err(|_| FetchError::BadRedirect)?;
                continue;
            }
            return Ok((url, resp));
        }
        Err(FetchError::Redirects(self.cfg.max_redirects))
    }

    /// The address to connect to for `url`: resolved, and public unless allow-listed.
    async fn vet(&self, url: &Url) -> Result<SocketAddr, FetchError> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(FetchError::Scheme(url.scheme().chars().take(32).collect()));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(FetchError::Credentials);
        }
        let host = url
            .host_str()
            .ok_or_else(|| FetchError::Url("no host".into()))?;
        let port = url
            .port_or_known_default()
            .ok_or_else(|| FetchError::Url("no port".into()))?;
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let addrs: Vec<SocketAddr> = match bare.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => tokio::net::lookup_host((bare, port))
                .await
                .map_err(|_| FetchError::Resolve(bare.to_string()))?
                .collect(),
        };
        let first = *addrs
            .first()
            .ok_or_else(|| FetchError::Resolve(bare.to_string()))?;
        if self.allowed(bare, port) {
            return Ok(first);
        }
        // Every address must be public: a name with one private answer is refused.
        for a in &addrs {
            if let Some(class) = refused_class(a.ip()) {
                return Err(FetchError::Refused {
                    host: bare.to_string(),
                    addr: a.ip(),
                    class,
                });
            }
        }
        Ok(first)
    }

    fn allowed(&self, host: &str, port: u16) -> bool {
        let with_port = format!("{host}:{port}");
        self.cfg.allow_hosts.iter().any(|a| {
            let a = a.trim().trim_start_matches('[').replace("]:", ":");
            let a = a.trim_end_matches(']');
            a.eq_ignore_ascii_case(host) || a.eq_ignore_ascii_case(&with_port)
        })
    }

    /// One request to the vetted address, no redirects followed, no proxy.
    async fn get(&self, url: &Url, addr: SocketAddr) -> Result<reqwest::Response, FetchError> {
        let host = url.host_str().unwrap_or_default().to_string();
        let client = reqwest::Client::builder()
            .redirect(Policy::none())
            .no_proxy()
            .resolve(&host, addr)
            .timeout(self.cfg.timeout)
            .build()
            .map_err(|e| FetchError::Http(e.to_string()))?;
        client
            .get(url.clone())
            .header(USER_AGENT, "Peregrine-visit/1 (+https://github.com)")
            .send()
            .await
            .map_err(|e| http_error(e, self.cfg.timeout))
    }

    /// Reads at most `max_bytes` of the body and renders it.
    async fn read(&self, url: Url, mut resp: reqwest::Response) -> Result<Page, FetchError> {
        let status = resp.status().as_u16();
        let kind = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        let mut body = Vec::new();
        let mut truncated = false;
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| http_error(e, self.cfg.timeout))?
        {
            let room = self.cfg.max_bytes - body.len();
            if chunk.len() > room {
                body.extend_from_slice(&chunk[..room]);
                truncated = true;
                break;
            }
            body.extend_from_slice(&chunk);
        }
        let (title, text) = render(&kind, &body);
        Ok(Page {
            url: url.to_string(),
            status,
            title,
            text,
            truncated,
        })
    }
}

/// A reqwest error as a fetch error: a timeout, or the message with its causes (the URL
/// left out: it is shown elsewhere).
fn http_error(e: reqwest::Error, timeout: Duration) -> FetchError {
    if e.is_timeout() {
        return FetchError::Timeout(timeout.as_secs().max(1));
    }
    let e = e.without_url();
    let mut msg = e.to_string();
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        msg.push_str(": ");
        msg.push_str(&c.to_string());
        cause = c.source();
    }
    FetchError::Http(msg)
}

/// The title and text of a body of `content_type`.
fn render(content_type: &str, body: &[u8]) -> (Option<String>, String) {
    let html = content_type.contains("html")
        || (content_type.is_empty()
            && String::from_utf8_lossy(&body[..body.len().min(512)])
                .to_ascii_lowercase()
                .contains("<html"));
    if html {
        return (title_of(body), html_text(body));
    }
    let textual = content_type.starts_with("text/")
        || content_type.contains("json")
        || content_type.contains("xml")
        || content_type.is_empty();
    if textual {
        return (None, String::from_utf8_lossy(body).into_owned());
    }
    (
        None,
        format!(
            "[{} bytes of `{}` content, not shown]",
            body.len(),
            content_type
        ),
    )
}

/// An HTML document's readable text (scripts and styles left out).
pub(crate) fn html_text(body: &[u8]) -> String {
    html2text::config::plain()
        .string_from_read(body, 100)
        .unwrap_or_else(|_| String::from_utf8_lossy(body).into_owned())
}

/// The text of the first `<title>` element.
pub(crate) fn title_of(body: &[u8]) -> Option<String> {
    let head = String::from_utf8_lossy(&body[..body.len().min(64 << 10)]).into_owned();
    let lower = head.to_ascii_lowercase();
    let open = lower.find("<title")?;
    let start = open + lower[open..].find('>')? + 1;
    let end = start + lower[start..].find("</title")?;
    let t = head[start..end]
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    (!t.is_empty()).then_some(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(s: &str) -> bool {
        refused_class(s.parse().unwrap()).is_some()
    }

    #[test]
    fn internal_addresses_are_refused_in_every_family() {
        for a in [
            "127.0.0.1",
            "127.255.1.2",
            "0.0.0.0",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.0.1",
            "169.254.169.254",
            "100.64.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "64:ff9b::7f00:1",
            "2002:7f00:1::",
            "2002:a9fe:a9fe::1",
            "fc00::1",
            "fd00:ec2::254",
            "fe80::1",
            "ff02::1",
            "2001:db8::1",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
        ] {
            assert!(refused(a), "{a} must be refused");
        }
    }

    #[test]
    fn public_addresses_pass() {
        for a in [
            "93.184.215.14",
            "8.8.8.8",
            "172.32.0.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
        ] {
            assert!(!refused(a), "{a} is public");
        }
    }

    #[test]
    fn titles_and_text_come_out_of_html() {
        let page = b"<html><head><title> A  page </title><style>p{}</style></head><body><h1>Hi</h1><script>evil()</script><p>Text here.</p></body></html>";
        let (title, text) = render("text/html; charset=utf-8", page);
        assert_eq!(title.as_deref(), Some("A page"));
        assert!(text.contains("Text here."), "{text}");
        assert!(!text.contains("evil"), "{text}");
    }
}
