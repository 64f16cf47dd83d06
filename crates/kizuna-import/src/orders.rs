//! Order lines (one per line item, grouped by order) → `Order Completed` / `Order Cancelled` / `Order Refunded`
//! track messages in the Segment e-commerce v2 shape.

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Map, Value, json};

use crate::fields::{
    Fields, Header, Row, parse_email, parse_money, parse_quantity, parse_timestamp, put_str, round_money,
    strip_apostrophe,
};
use crate::message::{Identity, message_id, track};

/// A failure inside an order: the physical line it is on, and why.
pub(crate) type OrderError = (u64, String);

/// Header names that mark a Shopify orders export.
pub(crate) const SHOPIFY_MARKERS: [&str; 4] =
    ["lineitem name", "lineitem quantity", "lineitem price", "financial status"];
/// Columns a Shopify orders export must have for us to read it.
pub(crate) const SHOPIFY_REQUIRED: [&str; 4] = ["name", "created at", "lineitem quantity", "lineitem price"];
/// Columns of the generic orders format.
pub(crate) const GENERIC_COLUMNS: [&str; 17] = [
    "order_id",
    "user_id",
    "email",
    "created_at",
    "currency",
    "product_id",
    "sku",
    "name",
    "category",
    "brand",
    "price",
    "quantity",
    "discount",
    "shipping",
    "tax",
    "coupon",
    "status",
];
pub(crate) const GENERIC_REQUIRED: [&str; 3] = ["order_id", "created_at", "price"];

/// What an order became after parsing, before it is turned into messages.
struct Order {
    order_id: String,
    identity: Identity,
    created: DateTime<Utc>,
    /// Set for cancelled orders: the time of the cancellation (`Order Cancelled` replaces `Order Completed`).
    cancelled: Option<DateTime<Utc>>,
    currency: String,
    /// After discounts, before shipping and tax (Segment's `subtotal`); also the `revenue`.
    subtotal: f64,
    shipping: Option<f64>,
    tax: Option<f64>,
    discount: Option<f64>,
    total: f64,
    coupon: Option<String>,
    products: Vec<Value>,
    refunded: Option<f64>,
    extra: Map<String, Value>,
}

impl Order {
    fn messages(self) -> Vec<Value> {
        let mut props = Map::new();
        props.insert("order_id".into(), json!(self.order_id));
        props.insert("total".into(), json!(round_money(self.total)));
        props.insert("revenue".into(), json!(round_money(self.subtotal)));
        props.insert("subtotal".into(), json!(round_money(self.subtotal)));
        if let Some(s) = self.shipping {
            props.insert("shipping".into(), json!(s));
        }
        if let Some(t) = self.tax {
            props.insert("tax".into(), json!(t));
        }
        if let Some(d) = self.discount {
            props.insert("discount".into(), json!(d));
        }
        put_str(&mut props, "coupon", self.coupon.as_deref());
        props.insert("currency".into(), json!(self.currency));
        props.insert("products".into(), Value::Array(self.products));
        props.extend(self.extra);

        let id = &self.order_id;
        if let Some(at) = self.cancelled {
            return vec![track(&self.identity, "Order Cancelled", message_id("order", id, "cancelled"), at, props)];
        }
        let mut out =
            vec![track(&self.identity, "Order Completed", message_id("order", id, "completed"), self.created, props)];
        if let Some(amount) = self.refunded.filter(|a| *a > 0.0) {
            let mut refund = Map::new();
            refund.insert("order_id".into(), json!(id));
            refund.insert("total".into(), json!(round_money(amount)));
            refund.insert("currency".into(), json!(self.currency));
            let at = self.created + TimeDelta::seconds(1);
            out.push(track(&self.identity, "Order Refunded", message_id("order", id, "refunded"), at, refund));
        }
        out
    }
}

/// Reads order-level columns: they may be repeated on every line of the order or given only on the first;
/// a line that gives a *different* value is an error, since we could not tell which one is right.
struct OrderLevel<'a> {
    header: &'a Header,
    rows: &'a [Row],
}

impl<'a> OrderLevel<'a> {
    /// First non-empty value of `key` and the line it is on.
    fn get(&self, key: &'a str) -> Result<Option<(&'a str, u64)>, OrderError> {
        let mut found: Option<(&'a str, u64)> = None;
        for row in self.rows {
            let v = Fields::new(self.header, row).get(key);
            if v.is_empty() {
                continue;
            }
            match found {
                None => found = Some((v, row.line)),
                Some((first, first_line)) if first != v => {
                    let label = self.header.label(key);
                    return Err((
                        row.line,
                        format!("{label}: '{v}' differs from '{first}' on line {first_line} of the same order"),
                    ));
                }
                Some(_) => {}
            }
        }
        Ok(found)
    }

    fn str(&self, key: &'a str) -> Result<Option<&'a str>, OrderError> {
        Ok(self.get(key)?.map(|(v, _)| v))
    }

    fn money(&self, key: &'a str) -> Result<Option<f64>, OrderError> {
        match self.get(key)? {
            Some((v, line)) => parse_money(self.header.label(key), v).map_err(|e| (line, e)),
            None => Ok(None),
        }
    }

    fn timestamp(&self, key: &'a str) -> Result<Option<DateTime<Utc>>, OrderError> {
        match self.get(key)? {
            Some((v, line)) => parse_timestamp(self.header.label(key), v).map(Some).map_err(|e| (line, e)),
            None => Ok(None),
        }
    }

    fn required_timestamp(&self, key: &'a str) -> Result<DateTime<Utc>, OrderError> {
        let first_line = self.rows.first().map_or(0, |r| r.line);
        self.timestamp(key)?.ok_or_else(|| (first_line, format!("{}: missing", self.header.label(key))))
    }

    fn email(&self, key: &'a str) -> Result<Option<String>, OrderError> {
        match self.get(key)? {
            Some((v, line)) => parse_email(self.header.label(key), v).map_err(|e| (line, e)),
            None => Ok(None),
        }
    }

    fn currency(&self, key: &'a str, default: &str) -> Result<String, OrderError> {
        Ok(self.str(key)?.map_or_else(|| default.to_owned(), str::to_uppercase))
    }
}

fn first_line(rows: &[Row]) -> u64 {
    rows.first().map_or(0, |r| r.line)
}

/// One order of a Shopify orders export (all its consecutive lines with the same `Name`).
pub(crate) fn shopify(header: &Header, rows: &[Row], default_currency: &str) -> Result<Vec<Value>, OrderError> {
    let level = OrderLevel { header, rows };
    let line0 = first_line(rows);
    let order_id = level.str("name")?.unwrap_or_default().to_owned();

    let email = level.email("email")?;
    let customer_id = level.str("customer id")?.map(strip_apostrophe).filter(|s| !s.is_empty());
    let phone = match level.str("phone")? {
        Some(p) => Some(p),
        None => match level.str("billing phone")? {
            Some(p) => Some(p),
            None => level.str("shipping phone")?,
        },
    };
    let identity = Identity::new(
        customer_id.map(|id| format!("shopify:{id}")),
        email,
        phone.map(strip_apostrophe).map(str::to_owned),
        || "missing identifier: Email and Phone are both empty".to_owned(),
    )
    .map_err(|e| (line0, e))?;

    let created = level.required_timestamp("created at")?;
    let cancelled = level.timestamp("cancelled at")?;
    let currency = level.currency("currency", default_currency)?;

    let mut products = Vec::new();
    let mut items_total = 0.0;
    for row in rows {
        let f = Fields::new(header, row);
        let (name, sku) = (f.get("lineitem name"), f.get("lineitem sku"));
        let (price, qty) = (f.get("lineitem price"), f.get("lineitem quantity"));
        if name.is_empty() && sku.is_empty() && price.is_empty() && qty.is_empty() {
            continue; // a line that carries no line item (e.g. only extra order data)
        }
        let at = |e: String| (row.line, e);
        let quantity = parse_quantity(f.label("lineitem quantity"), qty).map_err(at)?;
        let price = parse_money(f.label("lineitem price"), price)
            .map_err(at)?
            .ok_or_else(|| at(format!("{}: missing", f.label("lineitem price"))))?;
        items_total += price * quantity as f64;
        let mut p = Map::new();
        put_str(&mut p, "product_id", f.opt("lineitem product id"));
        put_str(&mut p, "sku", Some(sku));
        put_str(&mut p, "name", Some(name));
        p.insert("price".into(), json!(price));
        p.insert("quantity".into(), json!(quantity));
        put_str(&mut p, "brand", f.opt("vendor"));
        products.push(Value::Object(p));
    }

    let discount = level.money("discount amount")?;
    let shipping = level.money("shipping")?;
    let tax = level.money("taxes")?;
    // Shopify's Subtotal is already net of discounts (line items − discounts, before shipping and taxes).
    let subtotal = match level.money("subtotal")? {
        Some(s) => s,
        None => (items_total - discount.unwrap_or(0.0)).max(0.0),
    };
    let total = match level.money("total")? {
        Some(t) => t,
        None => subtotal + shipping.unwrap_or(0.0) + tax.unwrap_or(0.0),
    };

    let mut extra = Map::new();
    put_str(&mut extra, "financial_status", level.str("financial status")?);
    put_str(&mut extra, "fulfillment_status", level.str("fulfillment status")?);

    Ok(Order {
        order_id,
        identity,
        created,
        cancelled,
        currency,
        subtotal,
        shipping,
        tax,
        discount,
        total,
        coupon: level.str("discount code")?.map(str::to_owned),
        products,
        refunded: level.money("refunded amount")?,
        extra,
    }
    .messages())
}

/// One order of the generic format (consecutive lines with the same `order_id`).
pub(crate) fn generic(header: &Header, rows: &[Row], default_currency: &str) -> Result<Vec<Value>, OrderError> {
    let level = OrderLevel { header, rows };
    let line0 = first_line(rows);
    let order_id = level.str("order_id")?.unwrap_or_default().to_owned();
    let identity = Identity::new(level.str("user_id")?.map(str::to_owned), level.email("email")?, None, || {
        "missing identifier: user_id and email are both empty".to_owned()
    })
    .map_err(|e| (line0, e))?;
    let created = level.required_timestamp("created_at")?;
    let currency = level.currency("currency", default_currency)?;

    let mut products = Vec::new();
    let mut items_total = 0.0;
    for row in rows {
        let f = Fields::new(header, row);
        let at = |e: String| (row.line, e);
        let price = f.money("price").map_err(at)?.ok_or_else(|| at(format!("{}: missing", f.label("price"))))?;
        let quantity = match f.opt("quantity") {
            Some(q) => parse_quantity(f.label("quantity"), q).map_err(at)?,
            None => 1,
        };
        items_total += price * quantity as f64;
        let mut p = Map::new();
        put_str(&mut p, "product_id", f.opt("product_id"));
        put_str(&mut p, "sku", f.opt("sku"));
        put_str(&mut p, "name", f.opt("name"));
        put_str(&mut p, "category", f.opt("category"));
        put_str(&mut p, "brand", f.opt("brand"));
        p.insert("price".into(), json!(price));
        p.insert("quantity".into(), json!(quantity));
        products.push(Value::Object(p));
    }

    let discount = level.money("discount")?;
    let subtotal = round_money(items_total - discount.unwrap_or(0.0));
    if subtotal < 0.0 {
        let d = discount.unwrap_or(0.0);
        let msg = format!(
            "{}: {d} is more than the order's line items total {}",
            header.label("discount"),
            round_money(items_total)
        );
        return Err((line0, msg));
    }
    let shipping = level.money("shipping")?;
    let tax = level.money("tax")?;
    let total = subtotal + shipping.unwrap_or(0.0) + tax.unwrap_or(0.0);

    let status_label = header.label("status");
    let status = level.get("status")?;
    let (cancelled, refunded) = match status.map(|(s, line)| (s.to_ascii_lowercase(), line)) {
        None => (None, None),
        Some((s, line)) => match s.as_str() {
            "completed" | "complete" => (None, None),
            "refunded" => (None, Some(total)),
            "cancelled" | "canceled" => (Some(created), None),
            _ => {
                let raw = status.map_or("", |(v, _)| v);
                return Err((line, format!("{status_label}: expected completed, refunded or cancelled, got '{raw}'")));
            }
        },
    };

    Ok(Order {
        order_id,
        identity,
        created,
        cancelled,
        currency,
        subtotal,
        shipping,
        tax,
        discount,
        total,
        coupon: level.str("coupon")?.map(str::to_owned),
        products,
        refunded,
        extra: Map::new(),
    }
    .messages())
}
