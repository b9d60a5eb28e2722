//! The demo FX service: quotes with exact decimal amounts and rates.

use std::str::FromStr;

use rust_decimal::{Decimal, RoundingStrategy};
use serde_json::{Value, json};

use super::http::{JsonReply, now_rfc3339, rfc3339_in};

/// Mid-market rates the demo quotes from (units of `to` per unit of `from`).
const RATES: [(&str, &str, &str); 6] = [
    ("USD", "GBP", "0.7892"),
    ("USD", "EUR", "0.9214"),
    ("EUR", "GBP", "0.8565"),
    ("EUR", "USD", "1.0853"),
    ("GBP", "USD", "1.2671"),
    ("GBP", "EUR", "1.1675"),
];
const QUOTE_TTL_SECONDS: i64 = 30;

fn rate(from: &str, to: &str) -> Option<Decimal> {
    RATES
        .iter()
        .find(|(f, t, _)| *f == from && *t == to)
        .and_then(|(_, _, r)| Decimal::from_str(r).ok())
}

/// An amount from JSON: a decimal string (`"1000.10"`, kept exactly) or a number.
pub fn decimal_field(body: &Value, field: &str) -> Option<Decimal> {
    match body.get(field)? {
        Value::String(s) => Decimal::from_str(s).ok(),
        Value::Number(n) => Decimal::from_str(&n.to_string()).ok(),
        _ => None,
    }
}

pub fn quote(tenant: &str, body: &[u8]) -> JsonReply {
    let Ok(request) = serde_json::from_slice::<Value>(body) else {
        return JsonReply::error(400, "invalid_json", "the body must be a JSON object");
    };
    let currency = |field| {
        request
            .get(field)
            .and_then(Value::as_str)
            .map(str::to_ascii_uppercase)
    };
    let (Some(from), Some(to), Some(amount)) = (
        currency("from"),
        currency("to"),
        decimal_field(&request, "amount"),
    ) else {
        return JsonReply::error(
            400,
            "invalid_quote_request",
            "send from, to (ISO 4217 codes) and amount (a decimal string)",
        );
    };
    if amount <= Decimal::ZERO {
        return JsonReply::error(400, "invalid_amount", "amount must be positive");
    }
    let Some(rate) = rate(&from, &to) else {
        return JsonReply::error(422, "pair_unsupported", "this currency pair is not quoted");
    };
    let converted =
        (amount * rate).round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero);
    JsonReply::new(
        201,
        json!({
            "id": format!("fxq_{}", uuid::Uuid::now_v7().simple()),
            "tenant": tenant,
            "from": from,
            "to": to,
            "amount": amount.to_string(),
            "rate": rate.to_string(),
            "converted_amount": converted.to_string(),
            "created_at": now_rfc3339(),
            "expires_at": rfc3339_in(QUOTE_TTL_SECONDS),
        }),
    )
}

pub fn rates() -> JsonReply {
    let rates: Vec<Value> = RATES
        .iter()
        .map(|(from, to, rate)| json!({"from": from, "to": to, "rate": rate}))
        .collect();
    JsonReply::new(200, json!({ "rates": rates, "as_of": now_rfc3339() }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_keep_decimals_exact() {
        let reply = quote("blue", br#"{"from":"usd","to":"GBP","amount":"1000.10"}"#);
        assert_eq!(reply.status, 201);
        assert_eq!(reply.body["amount"], "1000.10");
        assert_eq!(reply.body["rate"], "0.7892");
        assert_eq!(reply.body["converted_amount"], "789.28");
        assert_eq!(reply.body["tenant"], "blue");
        assert!(reply.body["id"].as_str().unwrap().starts_with("fxq_"));
    }

    #[test]
    fn bad_requests_are_explained() {
        assert_eq!(quote("blue", b"nope").status, 400);
        assert_eq!(quote("blue", br#"{"from":"USD","to":"GBP"}"#).status, 400);
        assert_eq!(
            quote("blue", br#"{"from":"USD","to":"JPY","amount":"1"}"#).status,
            422
        );
        assert_eq!(
            quote("blue", br#"{"from":"USD","to":"GBP","amount":"-1"}"#).status,
            400
        );
    }
}
