//! Idempotency keys (`Idempotency-Key`, draft-ietf-httpapi-idempotency-key-header, with Stripe's
//! semantics): the key's syntax, what the store keeps per key, and what a request carrying a key
//! that is known already gets. Plain values in, decisions out; the store and the proxy phases are
//! in the gateway.
//!
//! A key's record goes through: `InFlight` (taken by a first request; it names the moment after
//! which its owner cannot still be working on it) → `Completed` (the response, replayed to every
//! retry of the same request), `Unknown` (the request reached a provider and no complete answer
//! came back: never sent again) or deleted (nothing reached a provider: the client may try again).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

use crate::json::json_str;

/// Longest key accepted (Stripe's limit; the draft sets none).
pub const MAX_KEY_LEN: usize = 255;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyError {
    Missing,
    Malformed,
}

/// The key of a request's `Idempotency-Key` values: exactly one, 1–255 visible ASCII characters,
/// bare (`abc-123`, as Stripe's clients send it) or as a structured-field string (`"abc-123"`, as
/// the draft writes it; the quotes are not part of the key).
pub fn parse_key<'a>(values: &[&'a [u8]]) -> Result<&'a str, KeyError> {
    let value = match values {
        [] => return Err(KeyError::Missing),
        [one] => *one,
        _ => return Err(KeyError::Malformed),
    };
    let inner = match value {
        [b'"', inner @ .., b'"'] => inner,
        other => other,
    };
    let visible = |b: &u8| (0x21..=0x7e).contains(b) && *b != b'"' && *b != b'\\';
    if inner.is_empty() || inner.len() > MAX_KEY_LEN || !inner.iter().all(visible) {
        return Err(KeyError::Malformed);
    }
    std::str::from_utf8(inner).map_err(|_| KeyError::Malformed)
}

/// The bytes hashed into a key's identity in the store: the tenant, the caller and the route
/// scope the client's key, each length-prefixed so no two tuples run together.
///
/// The caller is the token's subject. A caller without one (no token, or a token without `sub`)
/// that presented a client certificate is told apart by the certificate's subject, as a fifth
/// part: callers with a token subject keep the four-part material, so their keys' digests stay
/// what earlier versions computed (an upgrade in the middle of a client's retries must find the
/// key it took). Callers with neither share their tenant's key space for the route.
pub fn scope_material(
    tenant: &str,
    subject: &str,
    client_certificate: Option<&str>,
    route: &str,
    key: &str,
) -> Vec<u8> {
    let certificate = client_certificate.filter(|_| subject.is_empty());
    let mut out = Vec::with_capacity(
        tenant.len()
            + subject.len()
            + route.len()
            + key.len()
            + certificate.map_or(0, str::len)
            + 40,
    );
    for part in [tenant, subject, route, key].into_iter().chain(certificate) {
        out.extend_from_slice(&(part.len() as u64).to_be_bytes());
        out.extend_from_slice(part.as_bytes());
    }
    out
}

/// The bytes hashed into a request's fingerprint: method, path with query, and the body's own
/// digest.
pub fn request_material(method: &str, path_and_query: &str, body_digest: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(method.len() + path_and_query.len() + body_digest.len() + 2);
    out.extend_from_slice(method.as_bytes());
    out.push(0);
    out.extend_from_slice(path_and_query.as_bytes());
    out.push(0);
    out.extend_from_slice(body_digest);
    out
}

/// What the store keeps for a key. `fingerprint` is the hex digest of the first request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Record {
    InFlight {
        fingerprint: String,
        /// Unix milliseconds after which the owner cannot still be waiting for a provider (its
        /// pool's total timeout is over): an `InFlight` record older than that lost its owner.
        deadline_ms: u64,
        /// The request that holds it (its X-Request-Id).
        request_id: String,
    },
    Completed {
        fingerprint: String,
        status: u16,
        headers: Vec<(String, String)>,
        /// Base64 of the body as the client received it.
        body: String,
    },
    /// The request reached `provider` and no complete answer came back.
    Unknown {
        fingerprint: String,
        provider: Option<String>,
    },
    /// It completed with `status`, but its body was larger than the store keeps.
    NotStored { fingerprint: String, status: u16 },
}

impl Record {
    pub fn completed(
        fingerprint: String,
        status: u16,
        headers: Vec<(String, String)>,
        body: &[u8],
    ) -> Self {
        Self::Completed {
            fingerprint,
            status,
            headers,
            body: STANDARD.encode(body),
        }
    }

    pub fn fingerprint(&self) -> &str {
        match self {
            Self::InFlight { fingerprint, .. }
            | Self::Completed { fingerprint, .. }
            | Self::Unknown { fingerprint, .. }
            | Self::NotStored { fingerprint, .. } => fingerprint,
        }
    }

    /// The record as JSON: the bytes serde_json writes for it (a test holds it to that), written
    /// by hand because two are written per keyed request and serde escapes byte by byte.
    pub fn encode(&self) -> String {
        let mut out = Vec::with_capacity(match self {
            Self::Completed { headers, body, .. } => {
                160 + body.len()
                    + headers
                        .iter()
                        .map(|(n, v)| n.len() + v.len() + 8)
                        .sum::<usize>()
            }
            _ => 160,
        });
        let state = match self {
            Self::InFlight { .. } => "in_flight",
            Self::Completed { .. } => "completed",
            Self::Unknown { .. } => "unknown",
            Self::NotStored { .. } => "not_stored",
        };
        out.extend_from_slice(br#"{"state":""#);
        out.extend_from_slice(state.as_bytes());
        out.extend_from_slice(br#"","fingerprint":"#);
        json_str(&mut out, self.fingerprint());
        let number = |out: &mut Vec<u8>, name: &[u8], n: u64| {
            out.extend_from_slice(name);
            out.extend_from_slice(n.to_string().as_bytes());
        };
        match self {
            Self::InFlight {
                deadline_ms,
                request_id,
                ..
            } => {
                number(&mut out, br#","deadline_ms":"#, *deadline_ms);
                out.extend_from_slice(br#","request_id":"#);
                json_str(&mut out, request_id);
            }
            Self::Completed {
                status,
                headers,
                body,
                ..
            } => {
                number(&mut out, br#","status":"#, u64::from(*status));
                out.extend_from_slice(br#","headers":["#);
                for (i, (name, value)) in headers.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    out.push(b'[');
                    json_str(&mut out, name);
                    out.push(b',');
                    json_str(&mut out, value);
                    out.push(b']');
                }
                out.extend_from_slice(br#"],"body":"#);
                json_str(&mut out, body);
            }
            Self::Unknown { provider, .. } => {
                out.extend_from_slice(br#","provider":"#);
                match provider {
                    Some(provider) => json_str(&mut out, provider),
                    None => out.extend_from_slice(b"null"),
                }
            }
            Self::NotStored { status, .. } => {
                number(&mut out, br#","status":"#, u64::from(*status));
            }
        }
        out.push(b'}');
        // Only ASCII and whole strings were written: valid UTF-8.
        String::from_utf8(out).unwrap_or_default()
    }

    pub fn decode(text: &str) -> Option<Self> {
        serde_json::from_str(text).ok()
    }
}

/// A stored response to replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replay {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// What a request whose key is already known gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The same request completed: its response, again.
    Replay(Replay),
    /// The same request is still being worked on: try again after this many seconds.
    InProgress { retry_after_seconds: u64 },
    /// The key was used for a different request.
    Reused,
    /// The same request may have reached `provider` (`None`: its owner was lost before telling
    /// which): never sent again, the client must reconcile.
    OutcomeUnknown { provider: Option<String> },
    /// The same request completed with `status`; its response was too large to keep.
    NotStored { status: u16 },
}

/// `Retry-After` while the first request is in progress: soon. A payment usually completes in
/// well under a second and asking again is answered from the store, while the first request's
/// deadline (the pool's total timeout and more) is tens of seconds away: a client honouring a
/// Retry-After that long (as it was) waited that long for an answer long since kept.
const IN_PROGRESS_RETRY_SECONDS: u64 = 1;

/// The decision for a request with `fingerprint` whose key holds `existing`, at `now_ms`.
pub fn decide(existing: &Record, fingerprint: &str, now_ms: u64) -> Decision {
    if existing.fingerprint() != fingerprint {
        return Decision::Reused;
    }
    match existing {
        Record::InFlight { deadline_ms, .. } if now_ms < *deadline_ms => Decision::InProgress {
            retry_after_seconds: IN_PROGRESS_RETRY_SECONDS,
        },
        Record::InFlight { .. } => Decision::OutcomeUnknown { provider: None },
        Record::Completed {
            status,
            headers,
            body,
            ..
        } => match STANDARD.decode(body) {
            Ok(body) => Decision::Replay(Replay {
                status: *status,
                headers: headers.clone(),
                body,
            }),
            // A record this version cannot read is not a reason to charge again.
            Err(_) => Decision::OutcomeUnknown { provider: None },
        },
        Record::Unknown { provider, .. } => Decision::OutcomeUnknown {
            provider: provider.clone(),
        },
        Record::NotStored { status, .. } => Decision::NotStored { status: *status },
    }
}

/// A provider's whole response: status, headers, body.
pub type WholeResponse<'a> = (u16, &'a [(String, String)], &'a [u8]);

/// How a first request ended, as far as the key is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ending<'a> {
    /// A provider's response, whole: status, headers, body (`None`: no complete response).
    pub response: Option<WholeResponse<'a>>,
    /// The body grew past what the store keeps.
    pub response_too_large: bool,
    /// The last provider the request may have reached (`None`: it reached none).
    pub reached: Option<&'a str>,
}

/// What to do with the key at the end of its first request: keep this record, or forget the key
/// (`None`: nothing reached a provider, so the client may simply try again).
pub fn settle(fingerprint: &str, ending: &Ending<'_>) -> Option<Record> {
    let fingerprint = fingerprint.to_string();
    match ending {
        Ending {
            response: Some((status, _, _)),
            response_too_large: true,
            ..
        } => Some(Record::NotStored {
            fingerprint,
            status: *status,
        }),
        Ending {
            response: Some((status, headers, body)),
            ..
        } => Some(Record::completed(
            fingerprint,
            *status,
            headers.to_vec(),
            body,
        )),
        Ending {
            reached: Some(provider),
            ..
        } => Some(Record::Unknown {
            fingerprint,
            provider: Some((*provider).to_string()),
        }),
        Ending { reached: None, .. } => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_one_visible_ascii_value_bare_or_quoted() {
        assert_eq!(parse_key(&[b"abc-123"]), Ok("abc-123"));
        assert_eq!(
            parse_key(&[b"\"8e03978e-40d5-43e8-bc93-6894a57f9324\""]),
            Ok("8e03978e-40d5-43e8-bc93-6894a57f9324")
        );
        assert_eq!(parse_key(&[]), Err(KeyError::Missing));
        let long = vec![b'k'; MAX_KEY_LEN + 1];
        for bad in [
            &b""[..],
            b"\"\"",
            b"has space",
            b"tab\there",
            b"quote\"inside",
            b"back\\slash",
            "caf\u{e9}".as_bytes(),
            &long,
        ] {
            assert_eq!(
                parse_key(&[bad]),
                Err(KeyError::Malformed),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(parse_key(&[b"a", b"b"]), Err(KeyError::Malformed));
        assert_eq!(
            parse_key(&[&vec![b'k'; MAX_KEY_LEN]]).map(str::len),
            Ok(255)
        );
    }

    #[test]
    fn the_scope_separates_tenants_callers_routes_and_concatenations() {
        let a = scope_material("blue", "alice", None, "/api/payments", "k1");
        assert_ne!(
            a,
            scope_material("green", "alice", None, "/api/payments", "k1")
        );
        assert_ne!(
            a,
            scope_material("blue", "bob", None, "/api/payments", "k1")
        );
        assert_ne!(
            a,
            scope_material("blue", "alice", None, "/api/refunds", "k1")
        );
        // Length prefixes: moving a character between parts changes the material.
        assert_ne!(
            scope_material("ab", "c", None, "/r", "k"),
            scope_material("a", "bc", None, "/r", "k")
        );
        assert_eq!(
            a,
            scope_material("blue", "alice", None, "/api/payments", "k1")
        );
        // Callers without a token subject are told apart by their client certificate; a token
        // subject keeps the material it always had.
        let cert = |c| scope_material("blue", "", Some(c), "/api/payments", "k1");
        assert_ne!(cert("CN=shop-a"), cert("CN=shop-b"));
        assert_ne!(
            cert("CN=shop-a"),
            scope_material("blue", "", None, "/api/payments", "k1")
        );
        assert_eq!(
            scope_material("blue", "alice", Some("CN=shop-a"), "/api/payments", "k1"),
            a
        );
        let mut four = Vec::new();
        for part in ["blue", "alice", "/api/payments", "k1"] {
            four.extend_from_slice(&(part.len() as u64).to_be_bytes());
            four.extend_from_slice(part.as_bytes());
        }
        assert_eq!(a, four, "the layout earlier versions hashed");
    }

    fn in_flight(deadline_ms: u64) -> Record {
        Record::InFlight {
            fingerprint: "f1".into(),
            deadline_ms,
            request_id: "r1".into(),
        }
    }

    #[test]
    fn a_known_key_is_replayed_refused_or_held_never_sent_again() {
        let done = Record::completed(
            "f1".into(),
            201,
            vec![("content-type".into(), "application/json".into())],
            b"{\"id\":\"pay_1\"}",
        );
        let decoded = Record::decode(&done.encode()).unwrap();
        assert_eq!(decoded, done);
        assert_eq!(
            decide(&decoded, "f1", 0),
            Decision::Replay(Replay {
                status: 201,
                headers: vec![("content-type".into(), "application/json".into())],
                body: b"{\"id\":\"pay_1\"}".to_vec(),
            })
        );
        assert_eq!(decide(&done, "f2", 0), Decision::Reused);
        assert_eq!(decide(&in_flight(10_500), "f2", 10_000), Decision::Reused);
        assert_eq!(
            decide(&in_flight(10_500), "f1", 10_000),
            Decision::InProgress {
                retry_after_seconds: 1
            }
        );
        // However far the first request's deadline: ask again in a second.
        assert_eq!(
            decide(&in_flight(40_000), "f1", 10_000),
            Decision::InProgress {
                retry_after_seconds: 1
            }
        );
        // Its owner is gone (past the pool's total timeout): it may have reached a provider.
        assert_eq!(
            decide(&in_flight(10_000), "f1", 10_000),
            Decision::OutcomeUnknown { provider: None }
        );
        let unknown = Record::Unknown {
            fingerprint: "f1".into(),
            provider: Some("cards-acme".into()),
        };
        assert_eq!(
            decide(&Record::decode(&unknown.encode()).unwrap(), "f1", 0),
            Decision::OutcomeUnknown {
                provider: Some("cards-acme".into())
            }
        );
        assert_eq!(
            decide(
                &Record::NotStored {
                    fingerprint: "f1".into(),
                    status: 200
                },
                "f1",
                0
            ),
            Decision::NotStored { status: 200 }
        );
        assert_eq!(Record::decode("not json"), None);
    }

    #[test]
    fn the_end_of_a_first_request_keeps_what_a_retry_must_learn() {
        let headers = vec![("content-type".to_string(), "application/json".to_string())];
        let whole = Ending {
            response: Some((201, &headers, b"{}")),
            response_too_large: false,
            reached: Some("cards-acme"),
        };
        assert!(matches!(
            settle("f", &whole),
            Some(Record::Completed { status: 201, .. })
        ));
        let large = Ending {
            response_too_large: true,
            ..whole.clone()
        };
        assert_eq!(
            settle("f", &large),
            Some(Record::NotStored {
                fingerprint: "f".into(),
                status: 201
            })
        );
        // Reached a provider, no whole answer (a timeout, a broken connection): unknown.
        let broke = Ending {
            response: None,
            response_too_large: false,
            reached: Some("cards-acme"),
        };
        assert_eq!(
            settle("f", &broke),
            Some(Record::Unknown {
                fingerprint: "f".into(),
                provider: Some("cards-acme".into())
            })
        );
        // Reached none (no provider available, every connection refused): forget the key.
        let none = Ending {
            response: None,
            response_too_large: false,
            reached: None,
        };
        assert_eq!(settle("f", &none), None);
    }
}
