//! Customer lines → `identify` messages.

use serde_json::{Map, Value, json};

use crate::fields::{Fields, normalize, parse_bool, parse_date, put_str, rfc3339, split_list, strip_apostrophe};
use crate::message::{Identity, identify};

/// Columns of the generic customers format; any other column becomes a string trait.
pub(crate) const GENERIC_COLUMNS: [&str; 12] = [
    "user_id",
    "email",
    "phone",
    "first_name",
    "last_name",
    "birthday",
    "city",
    "region",
    "country",
    "email_marketing",
    "sms_marketing",
    "created_at",
];

/// Header names that mark a Shopify customers export (current and pre-2023 layouts).
pub(crate) const SHOPIFY_MARKERS: [&str; 9] = [
    "customer id",
    "first name",
    "last name",
    "accepts email marketing",
    "accepts marketing",
    "accepts sms marketing",
    "default address address1",
    "address1",
    "total spent",
];

const ADDRESS1: [&str; 2] = ["default address address1", "address1"];
const ADDRESS2: [&str; 2] = ["default address address2", "address2"];
const CITY: [&str; 2] = ["default address city", "city"];
const STATE: [&str; 3] = ["default address province code", "province code", "province"];
const ZIP: [&str; 2] = ["default address zip", "zip"];
const COUNTRY: [&str; 3] = ["default address country code", "country code", "country"];
const COMPANY: [&str; 2] = ["default address company", "company"];
const PHONE: [&str; 2] = ["phone", "default address phone"];
const EMAIL_CONSENT: [&str; 2] = ["accepts email marketing", "accepts marketing"];

/// `{"email": {"marketing": "granted"}, "sms": {...}}` for the channels that have a value.
fn consent(email: Option<bool>, sms: Option<bool>) -> Option<Value> {
    let state = |b: bool| if b { "granted" } else { "denied" };
    let mut c = Map::new();
    if let Some(b) = email {
        c.insert("email".into(), json!({ "marketing": state(b) }));
    }
    if let Some(b) = sms {
        c.insert("sms".into(), json!({ "marketing": state(b) }));
    }
    (!c.is_empty()).then_some(Value::Object(c))
}

/// Segment-style address object; None when every part is empty.
fn address(
    street: Option<String>,
    city: Option<&str>,
    state: Option<&str>,
    zip: Option<&str>,
    country: Option<&str>,
) -> Option<Value> {
    let mut a = Map::new();
    put_str(&mut a, "street", street.as_deref());
    put_str(&mut a, "city", city);
    put_str(&mut a, "state", state);
    put_str(&mut a, "postal_code", zip);
    put_str(&mut a, "country", country);
    (!a.is_empty()).then_some(Value::Object(a))
}

/// One line of a Shopify customers export.
pub(crate) fn shopify(f: Fields<'_>) -> Result<Value, String> {
    let customer_id = f.opt("customer id").map(strip_apostrophe).filter(|s| !s.is_empty());
    let email = f.email("email")?;
    let phone = f.first_of(&PHONE).map(strip_apostrophe).filter(|s| !s.is_empty()).map(str::to_owned);
    let identity = Identity::new(customer_id.map(|id| format!("shopify:{id}")), email, phone, || {
        "missing identifier: Customer ID, Email and Phone are all empty".to_owned()
    })?;

    let mut traits = Map::new();
    put_str(&mut traits, "email", identity.email());
    put_str(&mut traits, "first_name", f.opt("first name"));
    put_str(&mut traits, "last_name", f.opt("last name"));
    put_str(&mut traits, "phone", identity.phone());
    if let Some(company) = f.first_of(&COMPANY) {
        traits.insert("company".into(), json!({ "name": company }));
    }
    let street = [f.first_of(&ADDRESS1), f.first_of(&ADDRESS2)].into_iter().flatten().collect::<Vec<_>>().join(", ");
    let zip = f.first_of(&ZIP).map(strip_apostrophe);
    if let Some(a) = address(Some(street), f.first_of(&CITY), f.first_of(&STATE), zip, f.first_of(&COUNTRY)) {
        traits.insert("address".into(), a);
    }
    let tags = split_list(f.get("tags"), ",");
    if !tags.is_empty() {
        traits.insert("tags".into(), json!(tags));
    }
    let email_ok = parse_bool(f.label_of(&EMAIL_CONSENT), f.first_of(&EMAIL_CONSENT).unwrap_or(""))?;
    let sms_ok = parse_bool(f.label("accepts sms marketing"), f.get("accepts sms marketing"))?;
    if let Some(c) = consent(email_ok, sms_ok) {
        traits.insert("consent".into(), c);
    }
    Ok(identify(&identity, traits))
}

/// One line of the generic customers format.
pub(crate) fn generic(f: Fields<'_>) -> Result<Value, String> {
    let email = f.email("email")?;
    let identity =
        Identity::new(f.opt("user_id").map(str::to_owned), email, f.opt("phone").map(str::to_owned), || {
            "missing identifier: user_id, email and phone are all empty".to_owned()
        })?;

    let mut traits = Map::new();
    put_str(&mut traits, "email", identity.email());
    put_str(&mut traits, "phone", identity.phone());
    put_str(&mut traits, "first_name", f.opt("first_name"));
    put_str(&mut traits, "last_name", f.opt("last_name"));
    if let Some(b) = f.opt("birthday") {
        traits.insert("birthday".into(), json!(parse_date(f.label("birthday"), b)?));
    }
    if let Some(a) = address(None, f.opt("city"), f.opt("region"), None, f.opt("country")) {
        traits.insert("address".into(), a);
    }
    let email_ok = parse_bool(f.label("email_marketing"), f.get("email_marketing"))?;
    let sms_ok = parse_bool(f.label("sms_marketing"), f.get("sms_marketing"))?;
    if let Some(c) = consent(email_ok, sms_ok) {
        traits.insert("consent".into(), c);
    }
    if let Some(t) = f.timestamp("created_at")? {
        traits.insert("created_at".into(), json!(rfc3339(t)));
    }
    for (i, name) in f.header.names() {
        let value = f.at(i);
        if !value.is_empty() && !GENERIC_COLUMNS.contains(&normalize(name).as_str()) {
            traits.entry(name.to_owned()).or_insert_with(|| json!(value));
        }
    }
    Ok(identify(&identity, traits))
}
