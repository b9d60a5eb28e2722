//! The operations console's static files, embedded in the binary (no build step), and the
//! headers they are sent with: a strict Content-Security-Policy (scripts, styles and
//! connections from the admin origin only; nothing inline, nothing evaluated, no framing).
//!
//! The files hold no data: the page asks for an admin token and reads everything it shows from
//! the `/admin/…` endpoints (Bearer) and the hub, which refuse anyone without the admin role.

use pingora::http::ResponseHeader;

pub struct Asset {
    pub path: &'static str,
    pub content_type: &'static str,
    pub body: &'static [u8],
}

const ASSETS: [Asset; 5] = [
    Asset {
        path: "/",
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("console/index.html"),
    },
    Asset {
        path: "/console/console.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("console/console.js"),
    },
    Asset {
        path: "/console/console.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("console/console.css"),
    },
    // The official browser build of @microsoft/signalr 10.0.11 (MIT), unchanged.
    Asset {
        path: "/console/signalr.min.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("console/signalr.min.js"),
    },
    Asset {
        path: "/console/LICENSE-signalr.txt",
        content_type: "text/plain; charset=utf-8",
        body: include_bytes!("console/LICENSE-signalr.txt"),
    },
];

/// `connect-src 'self'` covers the hub's WebSocket on the same host and port.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

pub fn asset(path: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.path == path)
}

pub fn response_header(asset: &Asset, head: bool) -> pingora::Result<ResponseHeader> {
    let mut header = ResponseHeader::build(200, Some(8))?;
    header.insert_header(http::header::CONTENT_TYPE, asset.content_type)?;
    if !head {
        header.insert_header(http::header::CONTENT_LENGTH, asset.body.len().to_string())?;
    }
    header.insert_header(
        http::header::CONTENT_SECURITY_POLICY,
        CONTENT_SECURITY_POLICY,
    )?;
    header.insert_header(http::header::X_CONTENT_TYPE_OPTIONS, "nosniff")?;
    header.insert_header(http::header::X_FRAME_OPTIONS, "DENY")?;
    header.insert_header(http::header::REFERRER_POLICY, "no-referrer")?;
    // A new binary serves new files: browsers check each time.
    header.insert_header(http::header::CACHE_CONTROL, "no-cache")?;
    Ok(header)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_only_its_own_files_and_nothing_inline() {
        let page = std::str::from_utf8(asset("/").unwrap().body).unwrap();
        for src in [
            "/console/signalr.min.js",
            "/console/console.js",
            "/console/console.css",
        ] {
            assert!(page.contains(src), "{src}");
            assert!(asset(src).is_some(), "{src}");
        }
        // The policy allows no inline script or style: the page must not need any.
        assert!(!page.contains("<script>") && !page.contains("style="));
        assert!(!page.contains("onclick") && !page.contains("javascript:"));
        assert!(asset("/console/missing.js").is_none());
    }
}
