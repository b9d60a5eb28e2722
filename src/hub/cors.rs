//! Which web pages may use the hub: browsers send the page's `Origin` with the negotiate request
//! (after a CORS preflight) and with the WebSocket upgrade. Only the exact origins listed in
//! `notifications.cors.allowed_origins` are let through; a request without `Origin` (a server,
//! the Node client) is not a page's and is not affected. A page from the admin port itself (the
//! operations console: its `Origin` names the `Host` it is asking) is same-origin: no CORS applies
//! to it and it needs no listing.

use std::collections::HashSet;

use http::{HeaderName, HeaderValue};
use pingora::http::RequestHeader;

/// Headers the official browser client sends with negotiate.
const ALLOWED_HEADERS: &str = "authorization, content-type, x-requested-with, x-signalr-user-agent";
/// How long a browser may cache a preflight answer.
const PREFLIGHT_MAX_AGE: &str = "600";

#[derive(Debug, Clone, Default)]
pub struct Cors {
    origins: HashSet<String>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum OriginCheck {
    /// No `Origin`: not a browser page.
    None,
    /// A listed origin: answer with CORS headers for it.
    Allowed(HeaderValue),
    Refused,
}

impl Cors {
    /// From validated origins (see [`normalize`]).
    pub fn new(origins: impl IntoIterator<Item = String>) -> Self {
        Self {
            origins: origins.into_iter().collect(),
        }
    }

    pub fn check(&self, req: &RequestHeader) -> OriginCheck {
        let Some(origin) = req.headers.get(http::header::ORIGIN) else {
            return OriginCheck::None;
        };
        let origin_text = origin.to_str().ok().and_then(normalize);
        if origin_text
            .as_deref()
            .is_some_and(|o| is_same_origin(o, req))
        {
            return OriginCheck::None;
        }
        let listed = origin_text.is_some_and(|o| self.origins.contains(&o));
        if listed {
            OriginCheck::Allowed(origin.clone())
        } else {
            OriginCheck::Refused
        }
    }
}

/// Whether the normalized `origin` is the server the request is addressed to (its `Host`): one
/// port serves one scheme, so the page came from this admin service.
fn is_same_origin(origin: &str, req: &RequestHeader) -> bool {
    let host = req
        .headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri.authority().map(|a| a.as_str()));
    let Some(host) = host else {
        return false;
    };
    let Some((scheme, _)) = origin.split_once("://") else {
        return false;
    };
    normalize(&format!("{scheme}://{host}")).as_deref() == Some(origin)
}

/// The headers of a response to a listed origin's request.
pub fn response_headers(origin: &HeaderValue) -> Vec<(HeaderName, HeaderValue)> {
    vec![
        (http::header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone()),
        // The official client sends credentials (cookies) unless told not to: it needs this.
        (
            http::header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        ),
        (http::header::VARY, HeaderValue::from_static("Origin")),
    ]
}

/// The headers of a successful preflight for a listed origin.
pub fn preflight_headers(origin: &HeaderValue) -> Vec<(HeaderName, HeaderValue)> {
    let mut headers = response_headers(origin);
    headers.extend([
        (
            http::header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("POST, OPTIONS"),
        ),
        (
            http::header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static(ALLOWED_HEADERS),
        ),
        (
            http::header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static(PREFLIGHT_MAX_AGE),
        ),
    ]);
    headers
}

/// An origin as browsers send it, `scheme://host[:port]` in lower case without the scheme's
/// default port; `None` when `text` is not one (a path, a query, a wildcard, `null`).
pub fn normalize(text: &str) -> Option<String> {
    let (scheme, rest) = text.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "https" => "443",
        "http" => "80",
        _ => return None,
    };
    if rest.is_empty() || rest.contains(['/', '?', '#', '@', '*', ' ']) {
        return None;
    }
    let (host, port) = match rest.rsplit_once(':') {
        // An IPv6 literal's colons are inside its brackets.
        Some((host, port)) if !port.contains(']') => (host, Some(port)),
        _ => (rest, None),
    };
    if host.is_empty() {
        return None;
    }
    let port = match port {
        Some(p) if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) => return None,
        Some(p) if p.parse::<u16>().is_err() => return None,
        Some(p) if p == default_port => None,
        other => other,
    };
    let host = host.to_ascii_lowercase();
    Some(match port {
        Some(port) => format!("{scheme}://{host}:{port}"),
        None => format!("{scheme}://{host}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(origin: Option<&str>) -> RequestHeader {
        let mut req = RequestHeader::build("POST", b"/hubs/notifications/negotiate", None).unwrap();
        if let Some(origin) = origin {
            req.insert_header("Origin", origin).unwrap();
        }
        req
    }

    #[test]
    fn origins_are_compared_as_browsers_send_them() {
        assert_eq!(
            normalize("HTTPS://Dashboard.Smartpay.com:443").as_deref(),
            Some("https://dashboard.smartpay.com")
        );
        assert_eq!(
            normalize("http://localhost:8080").as_deref(),
            Some("http://localhost:8080")
        );
        assert_eq!(
            normalize("http://[::1]:8080").as_deref(),
            Some("http://[::1]:8080")
        );
        for bad in [
            "*",
            "null",
            "https://a.com/",
            "https://a.com/app",
            "https://*.a.com",
            "ftp://a.com",
            "https://",
            "https://a.com:",
            "https://a.com:99999",
            "https://user@a.com",
            "a.com",
        ] {
            assert_eq!(normalize(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_page_of_the_admin_port_itself_is_same_origin() {
        let cors = Cors::new([]);
        let with_host = |origin: &str, host: &str| {
            let mut req = request(Some(origin));
            req.insert_header("Host", host).unwrap();
            req
        };
        assert_eq!(
            cors.check(&with_host("http://127.0.0.1:9090", "127.0.0.1:9090")),
            OriginCheck::None
        );
        assert_eq!(
            cors.check(&with_host("https://Admin.Example", "admin.example:443")),
            OriginCheck::None
        );
        for (origin, host) in [
            ("http://127.0.0.1:9091", "127.0.0.1:9090"),
            ("http://evil.example", "admin.example"),
            ("http://admin.example.evil.example", "admin.example"),
        ] {
            assert_eq!(
                cors.check(&with_host(origin, host)),
                OriginCheck::Refused,
                "{origin} {host}"
            );
        }
        assert_eq!(
            cors.check(&request(Some("http://127.0.0.1:9090"))),
            OriginCheck::Refused,
            "no Host: not same-origin"
        );
    }

    #[test]
    fn only_listed_origins_pass_and_requests_without_one_are_not_pages() {
        let cors = Cors::new([normalize("https://dashboard.smartpay.com").unwrap()]);
        assert_eq!(cors.check(&request(None)), OriginCheck::None);
        assert!(matches!(
            cors.check(&request(Some("https://dashboard.smartpay.com"))),
            OriginCheck::Allowed(_)
        ));
        for refused in [
            "https://evil.example",
            "http://dashboard.smartpay.com",
            "https://dashboard.smartpay.com.evil.example",
            "null",
        ] {
            assert_eq!(
                cors.check(&request(Some(refused))),
                OriginCheck::Refused,
                "{refused}"
            );
        }
        assert_eq!(
            Cors::default().check(&request(Some("https://dashboard.smartpay.com"))),
            OriginCheck::Refused,
            "no list: no page is let through"
        );
    }
}
