//! A demo card-payment connector: takes a payment, charges its own fee.

use rust_decimal::{Decimal, RoundingStrategy};
use serde_json::{Value, json};

use super::fx::decimal_field;
use super::http::{JsonReply, now_rfc3339};

/// A connector's price: `percent` of the amount plus `fixed`, in the payment's currency.
#[derive(Debug, Clone, Copy)]
pub struct Fee {
    pub percent: Decimal,
    pub fixed: Decimal,
}

impl Fee {
    pub fn on(&self, amount: Decimal) -> Decimal {
        (amount * self.percent / Decimal::ONE_HUNDRED + self.fixed)
            .round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero)
    }
}

pub fn pay(provider: &str, fee: Fee, tenant: &str, body: &[u8]) -> JsonReply {
    let Ok(request) = serde_json::from_slice::<Value>(body) else {
        return JsonReply::error(400, "invalid_json", "the body must be a JSON object");
    };
    let currency = request.get("currency").and_then(Value::as_str);
    let (Some(amount), Some(currency)) = (decimal_field(&request, "amount"), currency) else {
        return JsonReply::error(
            400,
            "invalid_payment_request",
            "send amount (a decimal string) and currency (an ISO 4217 code)",
        );
    };
    if amount <= Decimal::ZERO {
        return JsonReply::error(400, "invalid_amount", "amount must be positive");
    }
    JsonReply::new(
        201,
        json!({
            "id": format!("pay_{}", uuid::Uuid::now_v7().simple()),
            "status": "succeeded",
            "tenant": tenant,
            "provider": provider,
            "amount": amount.to_string(),
            "currency": currency.to_ascii_uppercase(),
            "fee": fee.on(amount).to_string(),
            "created_at": now_rfc3339(),
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    #[test]
    fn fee_is_exact() {
        let fee = Fee {
            percent: Decimal::from_str("1.9").unwrap(),
            fixed: Decimal::from_str("0.20").unwrap(),
        };
        assert_eq!(
            fee.on(Decimal::from_str("25.00").unwrap()).to_string(),
            "0.68"
        );
        let reply = pay(
            "cards-acme",
            fee,
            "blue",
            br#"{"amount":"25.00","currency":"eur"}"#,
        );
        assert_eq!(reply.status, 201);
        assert_eq!(reply.body["currency"], "EUR");
        assert_eq!(reply.body["fee"], "0.68");
        assert_eq!(reply.body["provider"], "cards-acme");
    }
}
