//! Trigger rules end to end: which exchanges fire, and the exact event fields taken from a body.

use std::str::FromStr;

use payedge_filters::triggers::{
    ExtractError, FieldValue, PathMatch, TriggerConfigError, TriggerRule, TriggerSpec,
};
use rust_decimal::Decimal;
use serde_json::json;

const FX_QUOTE: &str = r#"{"id":"fxq_1","from":"USD","to":"GBP","amount":1000.10,"rate":"0.7892","nested":{"a/b":{"c~d":[1,2,{"x":true}]}}}"#;

fn spec() -> TriggerSpec {
    TriggerSpec {
        name: "fx_quote".into(),
        event: "fx.quote.created".into(),
        method: Some("POST".into()),
        path: PathMatch::Exact("/api/fx/quote".into()),
        statuses: vec![200, 201],
        require_json: true,
        fields: vec![],
        required: vec![],
        max_body_bytes: 65536,
    }
}

fn fields(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(n, p)| (n.to_string(), p.to_string()))
        .collect()
}

fn rule_with(pairs: &[(&str, &str)], required: &[&str]) -> TriggerRule {
    let spec = TriggerSpec {
        fields: fields(pairs),
        required: required.iter().map(|s| s.to_string()).collect(),
        ..spec()
    };
    TriggerRule::new(spec).expect("valid spec")
}

fn dec(s: &str) -> FieldValue<'static> {
    FieldValue::Decimal(Decimal::from_str_exact(s).expect("decimal"))
}

fn s(v: &str) -> FieldValue<'_> {
    FieldValue::String(v.into())
}

fn extracted<'a>(
    pairs: &[(&'a str, FieldValue<'a>)],
) -> Result<Vec<(&'a str, FieldValue<'a>)>, ExtractError> {
    Ok(pairs.to_vec())
}

#[test]
fn accessors_report_the_spec() {
    let rule = TriggerRule::new(spec()).expect("valid spec");
    assert_eq!(rule.name(), "fx_quote");
    assert_eq!(rule.event(), "fx.quote.created");
    assert_eq!(rule.max_body_bytes(), 65536);
}

#[test]
fn fx_quote_fields_are_extracted_exactly() {
    let rule = rule_with(
        &[
            ("quote_id", "/id"),
            ("amount", "/amount"),
            ("rate", "/rate"),
            ("from", "/from"),
            ("flag", "/nested/a~1b/c~0d/2/x"),
            ("second", "/nested/a~1b/c~0d/1"),
            ("list", "/nested/a~1b/c~0d"),
        ],
        &["quote_id", "amount"],
    );
    let got = rule.extract(FX_QUOTE.as_bytes());
    assert_eq!(
        got,
        extracted(&[
            ("quote_id", s("fxq_1")),
            ("amount", dec("1000.10")),
            ("rate", s("0.7892")),
            ("from", s("USD")),
            ("flag", FieldValue::Bool(true)),
            ("second", dec("2")),
            ("list", FieldValue::Json(r#"[1,2,{"x":true}]"#.into())),
        ])
    );
    let got = got.expect("extracted");

    let amount = &got[1].1;
    // Scale is kept: not 1000.1, which an f64 round trip would give.
    assert_eq!(amount.to_json(), json!("1000.10"));
    assert_eq!(amount.as_text(), "1000.10");
    match amount {
        FieldValue::Decimal(d) => {
            assert_eq!(d.scale(), 2);
            assert_eq!(*d, Decimal::from_str("1000.1").expect("decimal"));
        }
        other => panic!("amount is {other:?}"),
    }
    // A numeric-looking string stays a string.
    assert_eq!(got[2].1.to_json(), json!("0.7892"));
    assert_eq!(got[4].1.to_json(), json!(true));
    assert_eq!(got[4].1.as_text(), "true");
    // Numbers embedded in JSON values are exact strings too.
    assert_eq!(got[6].1.to_json(), json!(["1", "2", {"x": true}]));
    assert_eq!(got[6].1.as_text(), r#"[1,2,{"x":true}]"#);
}

#[test]
fn output_follows_field_order_not_document_order() {
    let rule = rule_with(&[("to", "/to"), ("id", "/id"), ("from", "/from")], &[]);
    assert_eq!(
        rule.extract(FX_QUOTE.as_bytes()),
        extracted(&[("to", s("GBP")), ("id", s("fxq_1")), ("from", s("USD"))])
    );
}

#[test]
fn the_empty_pointer_is_the_whole_document() {
    let rule = rule_with(&[("all", "")], &[]);
    let got = rule
        .extract(b" { \"amount\" : 1000.10 ,\n \"note\": \"a  b\" } ")
        .expect("extracted");
    assert_eq!(
        got,
        vec![(
            "all",
            FieldValue::Json(r#"{"amount":1000.10,"note":"a  b"}"#.into())
        )]
    );
    assert_eq!(
        got[0].1.to_json(),
        json!({"amount": "1000.10", "note": "a  b"})
    );

    let scalar = rule.extract(b"42.50").expect("extracted");
    assert_eq!(scalar, vec![("all", dec("42.50"))]);
}

#[test]
fn strings_are_unescaped() {
    let rule = rule_with(
        &[
            ("memo", "/memo"),
            ("key", "/k\"q"),
            ("raw", "/raw"),
            ("empty", "/e"),
        ],
        &[],
    );
    let body = r#"{"memo":"line\nbreak \"quoted\" \u00e9\ud83d\ude00 \/","k\"q":"v","raw":"é😀 /x'","e":""}"#;
    let got = rule.extract(body.as_bytes()).expect("extracted");
    assert_eq!(got[0].1, s("line\nbreak \"quoted\" \u{e9}\u{1F600} /"));
    assert_eq!(
        got[0].1.to_json(),
        json!("line\nbreak \"quoted\" \u{e9}\u{1F600} /")
    );
    assert_eq!(got[1].1, s("v"));
    assert_eq!(got[2].1, s("é😀 /x'"));
    assert_eq!(got[3].1, s(""));
}

#[test]
fn numbers_become_exact_decimals_or_keep_their_text() {
    let rule = rule_with(&[("n", "/n")], &[]);
    let one = |text: &str| {
        let body = format!(r#"{{"n":{text}}}"#);
        let got = rule.extract(body.as_bytes()).expect("extracted");
        assert_eq!(got.len(), 1, "{text}");
        got.into_iter()
            .next()
            .map(|(_, v)| v.into_owned())
            .expect("one field")
    };

    let thousand = one("1e3");
    assert_eq!(thousand, FieldValue::Decimal(Decimal::from(1000)));
    assert_eq!(thousand.to_json(), json!("1000"));
    assert_eq!(one("1E+3"), FieldValue::Decimal(Decimal::from(1000)));
    assert_eq!(one("25e-1").as_text(), "2.5");
    assert_eq!(one("1.5e-3").as_text(), "0.0015");

    let half = one("-0.5");
    assert_eq!(half, dec("-0.5"));
    assert_eq!(half.to_json(), json!("-0.5"));
    assert_eq!(one("0").to_json(), json!("0"));
    // Decimal has no negative zero: the sign of -0 is dropped, the scale kept.
    assert_eq!(one("-0").as_text(), "0");
    assert_eq!(one("-0.00").as_text(), "0.00");
    assert_eq!(one("100").to_json(), json!("100"));
    assert_eq!(one("0.000").to_json(), json!("0.000"));
    assert_eq!(
        one("79228162514264337593543950335").as_text(),
        "79228162514264337593543950335"
    );
    assert_eq!(
        one("0.1234567890123456789012345678").as_text(),
        "0.1234567890123456789012345678"
    );

    // Too big, too precise, or too large an exponent for a Decimal: the JSON text, untouched.
    for text in [
        "12345678901234567890123456789012345",
        "79228162514264337593543950336",
        "0.12345678901234567890123456789",
        "1.2345678901234567890123456789012e5",
        "1e-29",
        "1e400",
        "-1E+100",
    ] {
        let value = one(text);
        assert_eq!(value, FieldValue::Number(text.to_string()), "{text}");
        assert_eq!(value.to_json(), json!(text), "{text}");
        assert_eq!(value.as_text(), text, "{text}");
    }
}

#[test]
fn required_missing_null_and_optional_missing() {
    let rule = rule_with(&[("id", "/id"), ("memo", "/memo")], &["id"]);

    // Optional missing or null: skipped.
    assert_eq!(
        rule.extract(br#"{"id":"p1"}"#),
        extracted(&[("id", s("p1"))])
    );
    assert_eq!(
        rule.extract(br#"{"id":"p1","memo":null}"#),
        extracted(&[("id", s("p1"))])
    );
    // Required missing, or present but null.
    assert_eq!(
        rule.extract(br#"{"memo":"m"}"#),
        Err(ExtractError::MissingField)
    );
    assert_eq!(
        rule.extract(br#"{"id":null,"memo":"m"}"#),
        Err(ExtractError::MissingField)
    );
    // A path through a scalar, an array that is too short, or the wrong container kind is missing.
    let deep = rule_with(&[("x", "/a/0/b")], &["x"]);
    for body in [
        r#"{"a":"str"}"#,
        r#"{"a":[]}"#,
        r#"{"a":[null]}"#,
        r#"[{"a":1}]"#,
        r#""scalar""#,
    ] {
        assert_eq!(
            deep.extract(body.as_bytes()),
            Err(ExtractError::MissingField),
            "{body}"
        );
    }
    assert_eq!(
        deep.extract(br#"{"a":[{"b":7}]}"#),
        extracted(&[("x", dec("7"))])
    );
    // On an object, "0" is a member name.
    assert_eq!(
        deep.extract(br#"{"a":{"0":{"b":1}}}"#),
        extracted(&[("x", dec("1"))])
    );
    assert_eq!(ExtractError::MissingField.reason(), "missing_field");
}

#[test]
fn array_indexes_follow_rfc_6901() {
    let rule = rule_with(
        &[
            ("first", "/a/0"),
            ("third", "/a/2"),
            ("leading_zero", "/a/01"),
            ("dash", "/a/-"),
            ("negative", "/a/-1"),
            ("past_end", "/a/3"),
        ],
        &[],
    );
    assert_eq!(
        rule.extract(br#"{"a":["x","y","z"]}"#),
        extracted(&[("first", s("x")), ("third", s("z"))])
    );
    // Object members named like indexes are found as names.
    let named = rule_with(&[("zero", "/a/0"), ("padded", "/a/01")], &[]);
    assert_eq!(
        named.extract(br#"{"a":{"0":"m0","01":"m01"}}"#),
        extracted(&[("zero", s("m0")), ("padded", s("m01"))])
    );
}

#[test]
fn empty_keys_and_repeated_keys() {
    let rule = rule_with(&[("empty", "/"), ("nested", "//")], &[]);
    assert_eq!(
        rule.extract(br#"{"":{"":"deep"}}"#),
        extracted(&[
            ("empty", FieldValue::Json(r#"{"":"deep"}"#.into())),
            ("nested", s("deep")),
        ])
    );
    // Like serde_json, the last of repeated keys wins.
    let last = rule_with(&[("k", "/k")], &[]);
    assert_eq!(
        last.extract(br#"{"k":1,"k":2}"#),
        extracted(&[("k", dec("2"))])
    );
}

#[test]
fn bodies_that_are_not_json() {
    let rule = rule_with(&[("id", "/id")], &[]);
    for body in [
        &b""[..],
        b"   ",
        b"<html>error</html>",
        b"{\"id\":\"x\"",
        b"{\"id\":\"x\"} trailing",
        b"{\"id\":1000.10,}",
        b"NaN",
        b"{\"id\":\"\xff\"}",
        b"\xef\xbb\xbf{\"id\":\"x\"}",
    ] {
        assert_eq!(
            rule.extract(body),
            Err(ExtractError::NotJson),
            "{}",
            String::from_utf8_lossy(body)
        );
    }
    // Even with no fields at all, the body must be JSON.
    let bare = rule_with(&[], &[]);
    assert_eq!(bare.extract(b"not json"), Err(ExtractError::NotJson));
    assert_eq!(bare.extract(b"{}"), Ok(vec![]));
    assert_eq!(ExtractError::NotJson.reason(), "not_json");
}

#[test]
fn json_values_nest_exactly() {
    let rule = rule_with(&[("quote", "/quote")], &[]);
    let body = br#"{"quote":{"legs":[{"amount":10.50,"big":1e400}],"ok":false,"none":null}}"#;
    let got = rule.extract(body).expect("extracted");
    assert_eq!(
        got[0].1.to_json(),
        json!({"legs": [{"amount": "10.50", "big": "1e400"}], "ok": false, "none": null})
    );
    // Built by hand from text that is not JSON: embedded as the text.
    assert_eq!(FieldValue::Json("{oops".into()).to_json(), json!("{oops"));
    assert_eq!(FieldValue::Number("1e400".into()).as_text(), "1e400");
}

#[test]
fn request_matching_by_method_and_path() {
    let exact = TriggerRule::new(spec()).expect("valid spec");
    let prefix = TriggerRule::new(TriggerSpec {
        method: None,
        path: PathMatch::Prefix("/api/fx".into()),
        ..spec()
    })
    .expect("valid spec");
    let slash_prefix = TriggerRule::new(TriggerSpec {
        method: Some("post".into()),
        path: PathMatch::Prefix("/api/fx/".into()),
        ..spec()
    })
    .expect("valid spec");

    let cases: &[(&TriggerRule, &str, &str, bool)] = &[
        (&exact, "POST", "/api/fx/quote", true),
        (&exact, "post", "/api/fx/quote", true),
        (&exact, "Post", "/api/fx/quote", true),
        (&exact, "GET", "/api/fx/quote", false),
        (&exact, "POSTX", "/api/fx/quote", false),
        (&exact, "POST", "/api/fx/quote/", false),
        (&exact, "POST", "/api/fx/quote/1", false),
        (&exact, "POST", "/api/fx/quotes", false),
        (&exact, "POST", "/API/fx/quote", false),
        (&exact, "POST", "/api/fx", false),
        (&prefix, "GET", "/api/fx", true),
        (&prefix, "DELETE", "/api/fx/quote", true),
        (&prefix, "POST", "/api/fx/", true),
        (&prefix, "POST", "/api/fxyz", false),
        (&prefix, "POST", "/api/f", false),
        (&prefix, "POST", "/api", false),
        (&slash_prefix, "POST", "/api/fx/quote", true),
        (&slash_prefix, "POST", "/api/fx/", true),
        (&slash_prefix, "POST", "/api/fx", false),
        (&slash_prefix, "PUT", "/api/fx/quote", false),
    ];
    for (i, (rule, method, path, want)) in cases.iter().enumerate() {
        assert_eq!(
            rule.matches_request(method, path),
            *want,
            "case {i}: {method} {path}"
        );
    }
}

#[test]
fn response_matching_by_status() {
    let listed = TriggerRule::new(TriggerSpec {
        require_json: false,
        ..spec()
    })
    .expect("valid spec");
    let any_2xx = TriggerRule::new(TriggerSpec {
        statuses: vec![],
        require_json: false,
        ..spec()
    })
    .expect("valid spec");
    let accepted_only = TriggerRule::new(TriggerSpec {
        statuses: vec![202],
        require_json: false,
        ..spec()
    })
    .expect("valid spec");

    for (status, want_listed, want_any, want_accepted) in [
        (200, true, true, false),
        (201, true, true, false),
        (202, false, true, true),
        (204, false, true, false),
        (299, false, true, false),
        (199, false, false, false),
        (300, false, false, false),
        (304, false, false, false),
        (400, false, false, false),
        (500, false, false, false),
    ] {
        assert_eq!(
            listed.matches_response(status, None),
            want_listed,
            "{status}"
        );
        assert_eq!(any_2xx.matches_response(status, None), want_any, "{status}");
        assert_eq!(
            accepted_only.matches_response(status, None),
            want_accepted,
            "{status}"
        );
    }
}

#[test]
fn response_matching_by_content_type() {
    let json_only = TriggerRule::new(spec()).expect("valid spec");
    let any_type = TriggerRule::new(TriggerSpec {
        require_json: false,
        ..spec()
    })
    .expect("valid spec");

    let cases: &[(Option<&[u8]>, bool)] = &[
        (Some(b"application/json"), true),
        (Some(b"application/json; charset=utf-8"), true),
        (Some(b"application/json;charset=UTF-8"), true),
        (Some(b"Application/JSON"), true),
        (Some(b"  application/json  "), true),
        (Some(b"application/json ; charset=utf-8"), true),
        (Some(b"application/problem+json"), true),
        (Some(b"application/vnd.api+json; charset=utf-8"), true),
        (Some(b"APPLICATION/PROBLEM+JSON"), true),
        (Some(b"text/plain"), false),
        (Some(b"text/json"), false),
        (Some(b"text/html; charset=utf-8"), false),
        (Some(b"application/jsonx"), false),
        (Some(b"application/json-seq"), false),
        (Some(b"application/x-ndjson"), false),
        (Some(b"application/+json"), false),
        (Some(b"application/problem+json+xml"), false),
        (Some(b"application/xml"), false),
        (Some(b"application"), false),
        (Some(b"json"), false),
        (Some(b""), false),
        (Some(b"application/\xffjson"), false),
        (None, false),
    ];
    for (content_type, want) in cases {
        let shown = content_type.map(String::from_utf8_lossy);
        assert_eq!(
            json_only.matches_response(201, *content_type),
            *want,
            "{shown:?}"
        );
        // Without require_json the content type does not matter.
        assert!(any_type.matches_response(201, *content_type), "{shown:?}");
        // The status is still checked.
        assert!(!json_only.matches_response(500, *content_type), "{shown:?}");
    }
}

fn refused(spec: TriggerSpec) -> TriggerConfigError {
    match TriggerRule::new(spec) {
        Ok(_) => panic!("spec accepted"),
        Err(e) => e,
    }
}

#[test]
fn every_configuration_error() {
    assert_eq!(
        refused(TriggerSpec {
            name: String::new(),
            ..spec()
        }),
        TriggerConfigError::EmptyName
    );
    assert_eq!(
        refused(TriggerSpec {
            event: String::new(),
            ..spec()
        }),
        TriggerConfigError::EmptyEvent
    );
    for bad in [
        "Fx.quote.created",
        ".fx.quote",
        "fx.quote.",
        "fx..quote",
        "fx quote",
        "fx/quote",
        "fx.quote:created",
        ".",
    ] {
        assert_eq!(
            refused(TriggerSpec {
                event: bad.into(),
                ..spec()
            }),
            TriggerConfigError::InvalidEvent(bad.into()),
            "{bad}"
        );
    }
    for good in ["fx.quote.created", "payment", "fx_v2.quote-1.created"] {
        assert!(
            TriggerRule::new(TriggerSpec {
                event: good.into(),
                ..spec()
            })
            .is_ok(),
            "{good}"
        );
    }
    assert_eq!(
        refused(TriggerSpec {
            max_body_bytes: 0,
            ..spec()
        }),
        TriggerConfigError::ZeroMaxBodyBytes
    );
    for bad in ["", "PO ST", "GET\r\n"] {
        assert_eq!(
            refused(TriggerSpec {
                method: Some(bad.into()),
                ..spec()
            }),
            TriggerConfigError::InvalidMethod(bad.into()),
            "{bad:?}"
        );
    }
    for path in [
        PathMatch::Exact("api/fx".into()),
        PathMatch::Prefix(String::new()),
    ] {
        let (PathMatch::Exact(text) | PathMatch::Prefix(text)) = path.clone();
        assert_eq!(
            refused(TriggerSpec { path, ..spec() }),
            TriggerConfigError::InvalidPath(text)
        );
    }
    for bad in [0, 99, 600, 1000] {
        assert_eq!(
            refused(TriggerSpec {
                statuses: vec![200, bad],
                ..spec()
            }),
            TriggerConfigError::InvalidStatus(bad),
            "{bad}"
        );
    }
    assert!(
        TriggerRule::new(TriggerSpec {
            statuses: vec![100, 599],
            ..spec()
        })
        .is_ok()
    );

    let with = |pairs: &[(&str, &str)], required: &[&str]| TriggerSpec {
        fields: fields(pairs),
        required: required.iter().map(|s| s.to_string()).collect(),
        ..spec()
    };
    assert_eq!(
        refused(with(&[("", "/id")], &[])),
        TriggerConfigError::EmptyFieldName {
            pointer: "/id".into()
        }
    );
    assert_eq!(
        refused(with(&[("id", "/id"), ("id", "/other")], &[])),
        TriggerConfigError::DuplicateField("id".into())
    );
    for bad in ["id", "#/id", " /id"] {
        assert_eq!(
            refused(with(&[("id", bad)], &[])),
            TriggerConfigError::PointerNotAbsolute {
                field: "id".into(),
                pointer: bad.into()
            },
            "{bad}"
        );
    }
    for bad in ["/a~", "/a~2", "/~x/b", "/a/~"] {
        assert_eq!(
            refused(with(&[("id", bad)], &[])),
            TriggerConfigError::PointerBadEscape {
                field: "id".into(),
                pointer: bad.into()
            },
            "{bad}"
        );
    }
    assert_eq!(
        refused(with(&[("id", "/id")], &["id", "amount"])),
        TriggerConfigError::RequiredNotAField("amount".into())
    );
    // The same pointer under two names is fine, and so is a required field named twice.
    assert!(TriggerRule::new(with(&[("a", "/id"), ("b", "/id")], &["a", "a"])).is_ok());
}

#[test]
fn configuration_errors_name_the_culprit() {
    let text = |e: TriggerConfigError| e.to_string();
    assert!(text(TriggerConfigError::InvalidEvent("Fx".into())).contains("\"Fx\""));
    assert!(text(TriggerConfigError::InvalidStatus(600)).contains("600"));
    assert!(text(TriggerConfigError::InvalidMethod("PO ST".into())).contains("PO ST"));
    assert!(text(TriggerConfigError::InvalidPath("api".into())).contains("\"api\""));
    assert!(text(TriggerConfigError::DuplicateField("id".into())).contains("\"id\""));
    assert!(text(TriggerConfigError::RequiredNotAField("amount".into())).contains("\"amount\""));
    assert!(
        text(TriggerConfigError::EmptyFieldName {
            pointer: "/id".into()
        })
        .contains("\"/id\"")
    );
    for e in [
        TriggerConfigError::PointerNotAbsolute {
            field: "amount".into(),
            pointer: "amount".into(),
        },
        TriggerConfigError::PointerBadEscape {
            field: "amount".into(),
            pointer: "/a~2".into(),
        },
    ] {
        let message = text(e.clone());
        let (TriggerConfigError::PointerNotAbsolute { pointer, .. }
        | TriggerConfigError::PointerBadEscape { pointer, .. }) = e
        else {
            unreachable!()
        };
        assert!(message.contains("field \"amount\""), "{message}");
        assert!(message.contains(&format!("{pointer:?}")), "{message}");
    }
}

#[test]
fn many_fields_through_one_container() {
    let rule = rule_with(
        &[
            ("a", "/payment/amount/value"),
            ("c", "/payment/amount/currency"),
            ("s", "/payment/status"),
            ("whole", "/payment/amount"),
        ],
        &["a", "c"],
    );
    let body = br#"{"payment":{"status":"settled","amount":{"value":-12.340,"currency":"EUR"}}}"#;
    assert_eq!(
        rule.extract(body),
        extracted(&[
            ("a", dec("-12.340")),
            ("c", s("EUR")),
            ("s", s("settled")),
            (
                "whole",
                FieldValue::Json(r#"{"value":-12.340,"currency":"EUR"}"#.into())
            ),
        ])
    );
}

#[test]
fn deep_nesting_neither_overflows_nor_panics() {
    let rule = rule_with(&[("all", "")], &[]);
    let nested = |depth: usize| format!("{}{}", "[".repeat(depth), "]".repeat(depth));

    let shallow_text = nested(100);
    let shallow = rule.extract(shallow_text.as_bytes()).expect("extracted");
    assert!(shallow[0].1.to_json().is_array());

    // Past 128 levels `to_json` stops following and embeds the text instead of recursing on.
    let text = nested(5000);
    let deep = rule.extract(text.as_bytes()).expect("extracted");
    assert_eq!(deep[0].1, FieldValue::Json(text.clone()));
    assert_eq!(deep[0].1.to_json(), json!(text));
}

#[test]
fn a_body_nested_200000_deep_neither_overflows_nor_yields_an_event() {
    // (In the proxy such a body is also over max_body_bytes: it is never even captured.)
    let rule = rule_with(&[("id", "/id"), ("deep", "/0/0/0")], &["id"]);
    let depth = 200_000;
    let arrays = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    assert_eq!(
        rule.extract(arrays.as_bytes()),
        Err(ExtractError::MissingField)
    );
    // Truncated: not JSON.
    assert_eq!(
        rule.extract(&arrays.as_bytes()[..depth + 10]),
        Err(ExtractError::NotJson)
    );
    // Deep objects under the field itself: extracted as text, never walked recursively.
    let objects = format!("{}1{}", r#"{"id":"#.repeat(depth), "}".repeat(depth));
    let fields = rule.extract(objects.as_bytes()).expect("extracted");
    assert!(
        fields[0].1.to_json().is_string(),
        "past 128 levels the value stays text"
    );
}
