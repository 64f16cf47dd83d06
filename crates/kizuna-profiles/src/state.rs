use crate::consent::{CHANNELS, ConsentEntry, ConsentStatus, PURPOSES};
use chrono::{DateTime, Utc};
use kizuna_ingest::{EcommerceEvent, Event, MessageType, classify};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::collections::BTreeMap;

const LAST_VIEWED_KEPT: usize = 20;
const EVENT_NAMES_KEPT: usize = 200;
const AFFINITY_HALF_LIFE_DAYS: f64 = 30.0;
const AFFINITY_KEPT: usize = 30;
/// Traits that are identifiers or consent, handled by their own logic instead of stored as plain traits.
const RESERVED_TRAITS: &[&str] = &["consent"];

/// Where a piece of data came from, in the sense privacy law and marketers use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum DataKind {
    /// What the customer told us deliberately: quizzes, preference centre, surveys.
    ZeroParty,
    /// What we observed: behaviour on our own storefront and apps.
    #[default]
    FirstParty,
    /// Another company's first-party data shared with us.
    SecondParty,
    /// Bought or aggregated data.
    ThirdParty,
    /// Loaded from a file (CSV import, migration).
    Imported,
}

impl DataKind {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "zero_party" => Self::ZeroParty,
            "first_party" => Self::FirstParty,
            "second_party" => Self::SecondParty,
            "third_party" => Self::ThirdParty,
            "imported" => Self::Imported,
            _ => return None,
        })
    }
}

/// The source a message came through and the data kind it defaults to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub source: String,
    pub data_kind: DataKind,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraitEntry {
    pub value: Value,
    #[serde(with = "crate::timestamp")]
    pub set_at: DateTime<Utc>,
    pub source: String,
    pub data_kind: DataKind,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ViewedProduct {
    pub product_id: String,
    #[serde(with = "crate::timestamp")]
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct OrderFacts {
    #[serde(with = "crate::timestamp")]
    at: DateTime<Utc>,
    value: f64,
    #[serde(default)]
    refunded: f64,
    #[serde(default)]
    cancelled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    currency: Option<String>,
    /// Product categories in the order (for time-between-orders per category).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    categories: Vec<String>,
}

/// One order as the profile knows it, for analytics (refunds and cancellations not yet netted out).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OrderView<'a> {
    pub order_id: &'a str,
    pub at: DateTime<Utc>,
    pub value: f64,
    pub refunded: f64,
    pub cancelled: bool,
    pub categories: &'a [String],
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Stamped<T> {
    value: T,
    #[serde(with = "crate::timestamp")]
    at: DateTime<Utc>,
}

/// Attributes computed from events; see [`Computed::summary`] for the public form.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Computed {
    #[serde(default, with = "crate::timestamp::option")]
    first_seen: Option<DateTime<Utc>>,
    #[serde(default, with = "crate::timestamp::option")]
    last_seen: Option<DateTime<Utc>>,
    event_count: u64,
    event_counts: BTreeMap<String, u64>,
    orders: BTreeMap<String, OrderFacts>,
    items_bought: u64,
    item_price_sum: f64,
    last_viewed: Vec<ViewedProduct>,
    #[serde(default, with = "crate::timestamp::option")]
    affinity_at: Option<DateTime<Utc>>,
    category_affinity: BTreeMap<String, f64>,
    brand_affinity: BTreeMap<String, f64>,
    location: Option<Stamped<BTreeMap<String, String>>>,
    timezone: Option<Stamped<String>>,
    locale: Option<Stamped<String>>,
}

/// A profile's whole state, stored as JSON beside the profile row.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProfileState {
    pub traits: BTreeMap<String, TraitEntry>,
    pub consent: BTreeMap<String, BTreeMap<String, ConsentEntry>>,
    pub computed: Computed,
}

fn number(v: Option<&Value>) -> Option<f64> {
    match v? {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .filter(|x: &f64| x.is_finite())
}

fn text(v: Option<&Value>) -> Option<String> {
    text_ref(v).map(Cow::into_owned)
}

/// [`text`] without a copy when the value is already a string.
fn text_ref(v: Option<&Value>) -> Option<Cow<'_, str>> {
    match v? {
        Value::String(s) if !s.trim().is_empty() => Some(Cow::Borrowed(s.trim())),
        Value::Number(n) => Some(Cow::Owned(n.to_string())),
        _ => None,
    }
}

fn decay(age_days: f64) -> f64 {
    (-(age_days.max(0.0)) * std::f64::consts::LN_2 / AFFINITY_HALF_LIFE_DAYS).exp()
}

fn days_between(earlier: DateTime<Utc>, later: DateTime<Utc>) -> f64 {
    (later - earlier).num_milliseconds() as f64 / 86_400_000.0
}

impl ProfileState {
    /// Folds one event into the state.
    pub fn apply(&mut self, event: &Event, origin: &Origin) {
        let at = event.timestamp;
        let data_kind = event
            .context()
            .and_then(|c| c.get("dataKind"))
            .and_then(Value::as_str)
            .and_then(DataKind::parse)
            .unwrap_or(origin.data_kind);
        if let Some(traits) = event.traits() {
            self.apply_traits(traits, at, &origin.source, data_kind);
        }
        if let Some(consent) = event.context().and_then(|c| c.get("consent")).and_then(Value::as_object) {
            self.apply_consent_object(consent, at, &origin.source);
        }
        self.computed.apply(event);
    }

    /// Records one consent decision; the later decision (by time) wins.
    pub fn set_consent(&mut self, channel: &str, purpose: &str, entry: ConsentEntry) {
        let slot = self.consent.entry(channel.to_owned()).or_default();
        match slot.get(purpose) {
            Some(existing) if (existing.at, existing.status) > (entry.at, entry.status) => {}
            _ => {
                slot.insert(purpose.to_owned(), entry);
            }
        }
    }

    fn apply_traits(&mut self, traits: &Map<String, Value>, at: DateTime<Utc>, source: &str, data_kind: DataKind) {
        for (name, value) in traits {
            if RESERVED_TRAITS.contains(&name.as_str()) {
                continue;
            }
            let entry = TraitEntry { value: value.clone(), set_at: at, source: source.to_owned(), data_kind };
            self.offer_trait(name.clone(), entry);
        }
        if let Some(consent) = traits.get("consent").and_then(Value::as_object) {
            self.apply_consent_object(consent, at, source);
        }
    }

    /// `{"email": {"marketing": "granted"}, "sms": "denied"}` — a bare status applies to every purpose.
    fn apply_consent_object(&mut self, consent: &Map<String, Value>, at: DateTime<Utc>, source: &str) {
        for (channel, value) in consent {
            if !CHANNELS.contains(&channel.as_str()) {
                continue;
            }
            let decisions: Vec<(&str, ConsentStatus)> = match value {
                Value::Object(purposes) => purposes
                    .iter()
                    .filter(|(p, _)| PURPOSES.contains(&p.as_str()))
                    .filter_map(|(p, s)| ConsentStatus::parse(s).map(|s| (p.as_str(), s)))
                    .collect(),
                other => {
                    ConsentStatus::parse(other).map(|s| PURPOSES.iter().map(|p| (*p, s)).collect()).unwrap_or_default()
                }
            };
            for (purpose, status) in decisions {
                self.set_consent(channel, purpose, ConsentEntry { status, source: source.to_owned(), at });
            }
        }
    }

    /// Folds another profile's state into this one, as if this profile had seen the other's events too
    /// (every part of the fold is order-insensitive, so no event needs re-reading).
    pub fn merge(&mut self, other: ProfileState) {
        for (name, entry) in other.traits {
            self.offer_trait(name, entry);
        }
        for (channel, purposes) in other.consent {
            for (purpose, entry) in purposes {
                self.set_consent(&channel, &purpose, entry);
            }
        }
        self.computed.merge(other.computed);
    }

    fn offer_trait(&mut self, name: String, entry: TraitEntry) {
        match self.traits.get(&name) {
            // Last write wins by event time; equal times are settled by value so the order never matters.
            Some(existing)
                if existing.set_at > entry.set_at
                    || (existing.set_at == entry.set_at
                        && serde_json::to_string(&existing.value).ok() >= serde_json::to_string(&entry.value).ok()) => {
            }
            _ => {
                self.traits.insert(name, entry);
            }
        }
    }

    /// The (channel, purpose) pairs whose consent is granted.
    pub fn granted_consents(&self) -> Vec<(String, String)> {
        self.consent
            .iter()
            .flat_map(|(channel, purposes)| {
                purposes
                    .iter()
                    .filter(|(_, entry)| entry.status == crate::ConsentStatus::Granted)
                    .map(move |(purpose, _)| (channel.clone(), purpose.clone()))
            })
            .collect()
    }

    /// The public JSON form of traits: name → value.
    pub fn trait_values(&self) -> Map<String, Value> {
        self.traits.iter().map(|(k, t)| (k.clone(), t.value.clone())).collect()
    }
}

impl Computed {
    fn merge(&mut self, other: Computed) {
        self.first_seen = self.first_seen.min(other.first_seen).or(self.first_seen.or(other.first_seen));
        self.last_seen = self.last_seen.max(other.last_seen);
        self.event_count += other.event_count;
        for (name, count) in other.event_counts {
            if self.event_counts.len() < EVENT_NAMES_KEPT || self.event_counts.contains_key(&name) {
                *self.event_counts.entry(name).or_default() += count;
            }
        }
        for (order_id, theirs) in other.orders {
            match self.orders.get_mut(&order_id) {
                None => {
                    self.orders.insert(order_id, theirs);
                }
                Some(ours) => {
                    if (theirs.value > 0.0 && theirs.at < ours.at) || ours.value == 0.0 {
                        ours.at = theirs.at;
                        ours.value = theirs.value;
                        ours.currency = theirs.currency.clone();
                        ours.categories = theirs.categories.clone();
                    }
                    ours.refunded += theirs.refunded;
                    ours.cancelled |= theirs.cancelled;
                }
            }
        }
        self.items_bought += other.items_bought;
        self.item_price_sum += other.item_price_sum;
        for viewed in other.last_viewed {
            self.remember_view(viewed.product_id, viewed.at);
        }
        // Bring both affinity sets to the later reference time, then add.
        if let Some(theirs_at) = other.affinity_at {
            let reference = self.affinity_at.map_or(theirs_at, |ours| ours.max(theirs_at));
            let ours_factor = self.affinity_at.map_or(1.0, |ours| decay(days_between(ours, reference)));
            let theirs_factor = decay(days_between(theirs_at, reference));
            self.category_affinity.values_mut().for_each(|s| *s *= ours_factor);
            self.brand_affinity.values_mut().for_each(|s| *s *= ours_factor);
            for (key, score) in other.category_affinity {
                bump(&mut self.category_affinity, key, score * theirs_factor);
            }
            for (key, score) in other.brand_affinity {
                bump(&mut self.brand_affinity, key, score * theirs_factor);
            }
            self.affinity_at = Some(reference);
        }
        if let Some(l) = other.location {
            set_stamped(&mut self.location, l.value, l.at);
        }
        if let Some(t) = other.timezone {
            set_stamped(&mut self.timezone, t.value, t.at);
        }
        if let Some(l) = other.locale {
            set_stamped(&mut self.locale, l.value, l.at);
        }
    }

    fn apply(&mut self, event: &Event) {
        let at = event.timestamp;
        self.first_seen = Some(self.first_seen.map_or(at, |t| t.min(at)));
        self.last_seen = Some(self.last_seen.map_or(at, |t| t.max(at)));
        self.event_count += 1;
        let name = match event.message_type {
            MessageType::Track => event.name().unwrap_or("track"),
            other => other.as_str(),
        };
        if let Some(count) = self.event_counts.get_mut(name) {
            *count += 1;
        } else if self.event_counts.len() < EVENT_NAMES_KEPT {
            self.event_counts.insert(name.to_owned(), 1);
        }
        if let Some(context) = event.context() {
            self.apply_context(context, at);
        }
        if let Some(address) = event.traits().and_then(|t| t.get("address")).and_then(Value::as_object) {
            let mut place = BTreeMap::new();
            for (key, from) in [("country", "country"), ("region", "state"), ("city", "city")] {
                if let Some(v) = text(address.get(from)) {
                    place.insert(key.to_owned(), v);
                }
            }
            self.set_location(place, at);
        }
        if event.message_type != MessageType::Track {
            return;
        }
        let empty = Map::new();
        let props = event.properties().unwrap_or(&empty);
        match event.name().and_then(classify) {
            Some(EcommerceEvent::ProductViewed | EcommerceEvent::ProductClicked) => {
                if let Some(product_id) = text(props.get("product_id")).or_else(|| text(props.get("sku"))) {
                    self.remember_view(product_id, at);
                }
                self.add_affinity(props, 1.0, at);
            }
            Some(EcommerceEvent::ProductAdded) => self.add_affinity(props, 3.0, at),
            Some(EcommerceEvent::OrderCompleted) => {
                let Some(order_id) = text(props.get("order_id")).or_else(|| Some(event.message_id.clone())) else {
                    return;
                };
                let value = number(props.get("total"))
                    .or_else(|| number(props.get("revenue")))
                    .or_else(|| number(props.get("value")))
                    .unwrap_or(0.0);
                let currency = text(props.get("currency"));
                let categories: std::collections::BTreeSet<String> = props
                    .get("products")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|p| text(p.get("category")))
                    .collect();
                let categories: Vec<String> = categories.into_iter().collect();
                let facts = self.orders.entry(order_id).or_insert(OrderFacts {
                    at,
                    value,
                    refunded: 0.0,
                    cancelled: false,
                    currency: currency.clone(),
                    categories: categories.clone(),
                });
                // A repeated Order Completed for the same order keeps the earliest report (order-insensitive).
                if at < facts.at {
                    facts.at = at;
                    facts.value = value;
                    facts.currency = currency;
                    facts.categories = categories;
                } else if facts.value == 0.0 && facts.at == at {
                    facts.value = value;
                    facts.categories = categories;
                }
                for product in props.get("products").and_then(Value::as_array).into_iter().flatten() {
                    let Some(product) = product.as_object() else { continue };
                    let quantity = number(product.get("quantity")).unwrap_or(1.0).max(0.0);
                    if let Some(price) = number(product.get("price")) {
                        self.items_bought += quantity as u64;
                        self.item_price_sum += price * quantity;
                    }
                    self.add_affinity(product, 5.0, at);
                }
            }
            Some(EcommerceEvent::OrderRefunded) => {
                if let Some(order_id) = text(props.get("order_id")) {
                    let amount = number(props.get("total")).or_else(|| number(props.get("value")));
                    let facts = self.orders.entry(order_id).or_insert(OrderFacts {
                        at,
                        value: 0.0,
                        refunded: 0.0,
                        cancelled: false,
                        currency: text(props.get("currency")),
                        categories: Vec::new(),
                    });
                    facts.refunded += amount.unwrap_or(facts.value);
                }
            }
            Some(EcommerceEvent::OrderCancelled) => {
                if let Some(order_id) = text(props.get("order_id")) {
                    let facts = self.orders.entry(order_id).or_insert(OrderFacts {
                        at,
                        value: 0.0,
                        refunded: 0.0,
                        cancelled: true,
                        currency: None,
                        categories: Vec::new(),
                    });
                    facts.cancelled = true;
                }
            }
            _ => {}
        }
    }

    /// Most events repeat the place, time zone and locale the profile already holds: then only the stamp moves,
    /// and nothing is allocated when they are strings (this ran on every event, on the single writer thread).
    fn apply_context(&mut self, context: &Map<String, Value>, at: DateTime<Utc>) {
        const PLACE: [&str; 5] = ["country", "region", "city", "latitude", "longitude"];
        if let Some(location) = context.get("location").and_then(Value::as_object) {
            let unchanged = self.location.as_mut().filter(|held| {
                PLACE
                    .iter()
                    .all(|key| text_ref(location.get(*key)).as_deref() == held.value.get(*key).map(String::as_str))
            });
            match unchanged {
                Some(held) => held.at = held.at.max(at),
                None => {
                    let mut place = BTreeMap::new();
                    for key in PLACE {
                        if let Some(v) = text(location.get(key)) {
                            place.insert(key.to_owned(), v);
                        }
                    }
                    self.set_location(place, at);
                }
            }
        }
        if let Some(tz) = text_ref(context.get("timezone")) {
            stamp_text(&mut self.timezone, &tz, at);
        }
        if let Some(locale) = text_ref(context.get("locale")) {
            stamp_text(&mut self.locale, &locale, at);
        }
    }

    fn set_location(&mut self, place: BTreeMap<String, String>, at: DateTime<Utc>) {
        if !place.is_empty() {
            set_stamped(&mut self.location, place, at);
        }
    }

    fn remember_view(&mut self, product_id: String, at: DateTime<Utc>) {
        if let Some(existing) = self.last_viewed.iter_mut().find(|v| v.product_id == product_id) {
            existing.at = existing.at.max(at);
        } else {
            self.last_viewed.push(ViewedProduct { product_id, at });
        }
        self.last_viewed.sort_by(|a, b| b.at.cmp(&a.at).then_with(|| a.product_id.cmp(&b.product_id)));
        self.last_viewed.truncate(LAST_VIEWED_KEPT);
    }

    /// Time-decayed interest (half-life 30 days): scores are kept as of `affinity_at`, the newest event seen.
    fn add_affinity(&mut self, item: &Map<String, Value>, weight: f64, at: DateTime<Utc>) {
        let reference = match self.affinity_at {
            Some(reference) if reference >= at => reference,
            Some(reference) => {
                let factor = decay(days_between(reference, at));
                self.category_affinity.values_mut().for_each(|s| *s *= factor);
                self.brand_affinity.values_mut().for_each(|s| *s *= factor);
                self.affinity_at = Some(at);
                at
            }
            None => {
                self.affinity_at = Some(at);
                at
            }
        };
        let contribution = weight * decay(days_between(at, reference));
        if let Some(category) = text(item.get("category")) {
            bump(&mut self.category_affinity, category, contribution);
        }
        if let Some(brand) = text(item.get("brand")) {
            bump(&mut self.brand_affinity, brand, contribution);
        }
    }

    /// The public JSON form: counts, money, dates, affinities normalised to shares that sum to 1.
    pub fn summary(&self) -> Value {
        let completed: Vec<&OrderFacts> = self.orders.values().filter(|o| !o.cancelled && o.value > 0.0).collect();
        let orders_count = completed.len();
        let revenue: f64 = completed.iter().map(|o| o.value).sum();
        let refunded: f64 = self.orders.values().map(|o| o.refunded).sum();
        let first = completed.iter().min_by_key(|o| o.at);
        let last = completed.iter().max_by_key(|o| o.at);
        let avg_item_price = self.avg_item_price();
        let price_band = self.price_band();
        serde_json::json!({
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
            "event_count": self.event_count,
            "event_counts": self.event_counts,
            "orders_count": orders_count,
            "revenue": round2(revenue),
            "net_revenue": round2(revenue - refunded),
            "refunds_count": self.orders.values().filter(|o| o.refunded > 0.0).count(),
            "refunded_amount": round2(refunded),
            "cancelled_count": self.orders.values().filter(|o| o.cancelled).count(),
            "aov": (orders_count > 0).then(|| round2(revenue / orders_count as f64)),
            "first_order_at": first.map(|o| o.at),
            "first_order_value": first.map(|o| round2(o.value)),
            "last_order_at": last.map(|o| o.at),
            "last_order_value": last.map(|o| round2(o.value)),
            "currency": last.and_then(|o| o.currency.clone()),
            "avg_item_price": avg_item_price.map(round2),
            "price_band": price_band,
            "last_viewed_products": self.last_viewed,
            "category_affinity": shares(&self.category_affinity),
            "brand_affinity": shares(&self.brand_affinity),
            "country": self.location.as_ref().and_then(|l| l.value.get("country")),
            "region": self.location.as_ref().and_then(|l| l.value.get("region")),
            "city": self.location.as_ref().and_then(|l| l.value.get("city")),
            "timezone": self.timezone.as_ref().map(|t| &t.value),
            "locale": self.locale.as_ref().map(|t| &t.value),
        })
    }

    fn avg_item_price(&self) -> Option<f64> {
        (self.items_bought > 0).then(|| self.item_price_sum / self.items_bought as f64)
    }

    /// The band of the average price paid per item, as in the summary's `price_band`.
    pub fn price_band(&self) -> Option<&'static str> {
        self.avg_item_price().map(|p| match p {
            p if p < 25.0 => "low",
            p if p < 75.0 => "mid",
            p if p < 200.0 => "high",
            _ => "premium",
        })
    }

    /// Category affinities as shares, exactly as in the summary's `category_affinity`, without building it:
    /// recommendations read these for every profile a commit changes.
    pub fn category_shares(&self) -> impl Iterator<Item = (&str, f64)> + '_ {
        share_iter(&self.category_affinity)
    }

    /// Brand affinities as shares, as in the summary's `brand_affinity`.
    pub fn brand_shares(&self) -> impl Iterator<Item = (&str, f64)> + '_ {
        share_iter(&self.brand_affinity)
    }

    /// The latest location seen (country, region, city), as in the summary.
    pub fn place(&self) -> (Option<&str>, Option<&str>, Option<&str>) {
        let field = |key: &str| self.location.as_ref().and_then(|l| l.value.get(key)).map(String::as_str);
        (field("country"), field("region"), field("city"))
    }

    /// The time zone seen in the profile's events, if any.
    pub fn timezone(&self) -> Option<&str> {
        self.timezone.as_ref().map(|t| t.value.as_str())
    }

    /// The locale seen in the profile's events, if any.
    pub fn locale(&self) -> Option<&str> {
        self.locale.as_ref().map(|t| t.value.as_str())
    }

    pub fn orders_count(&self) -> usize {
        self.orders.values().filter(|o| !o.cancelled && o.value > 0.0).count()
    }

    /// Every order the profile knows of, by order id.
    pub fn orders(&self) -> impl Iterator<Item = OrderView<'_>> {
        self.orders.iter().map(|(id, o)| OrderView {
            order_id: id,
            at: o.at,
            value: o.value,
            refunded: o.refunded,
            cancelled: o.cancelled,
            categories: &o.categories,
        })
    }

    /// How many events of each name (track events by name, other messages by type) the profile has.
    pub fn event_counts(&self) -> &BTreeMap<String, u64> {
        &self.event_counts
    }

    /// Latitude and longitude of the latest location that had them.
    pub fn coordinates(&self) -> Option<(f64, f64)> {
        let place = &self.location.as_ref()?.value;
        let lat: f64 = place.get("latitude")?.parse().ok()?;
        let lon: f64 = place.get("longitude")?.parse().ok()?;
        ((-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon)).then_some((lat, lon))
    }

    pub fn first_seen(&self) -> Option<DateTime<Utc>> {
        self.first_seen
    }

    pub fn last_seen(&self) -> Option<DateTime<Utc>> {
        self.last_seen
    }
}

fn set_stamped<T: PartialEq + Serialize>(slot: &mut Option<Stamped<T>>, value: T, at: DateTime<Utc>) {
    let replace = match slot {
        None => true,
        Some(existing) => {
            at > existing.at
                || (at == existing.at
                    && serde_json::to_string(&value).ok() > serde_json::to_string(&existing.value).ok())
        }
    };
    if replace {
        *slot = Some(Stamped { value, at });
    }
}

/// [`set_stamped`] for text, allocating only when the value changes.
fn stamp_text(slot: &mut Option<Stamped<String>>, value: &str, at: DateTime<Utc>) {
    match slot {
        Some(held) if held.value == value => held.at = held.at.max(at),
        _ => set_stamped(slot, value.to_owned(), at),
    }
}

fn bump(scores: &mut BTreeMap<String, f64>, key: String, by: f64) {
    *scores.entry(key).or_default() += by;
    if scores.len() > AFFINITY_KEPT {
        let weakest =
            scores.iter().min_by(|a, b| a.1.total_cmp(b.1).then_with(|| b.0.cmp(a.0))).map(|(k, _)| k.clone());
        if let Some(weakest) = weakest {
            scores.remove(&weakest);
        }
    }
}

fn shares(scores: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    share_iter(scores).map(|(k, share)| (k.to_owned(), share)).collect()
}

/// Each score's share of the total, rounded to thousandths; nothing when the total is not positive.
fn share_iter(scores: &BTreeMap<String, f64>) -> impl Iterator<Item = (&str, f64)> + '_ {
    let total: f64 = scores.values().sum();
    scores.iter().filter(move |_| total > 0.0).map(move |(k, v)| (k.as_str(), (v / total * 1000.0).round() / 1000.0))
}

/// Rounds to cents; never returns -0.0 (a sum of refunds that nets to nothing reads as 0, not "-0").
fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0 + 0.0
}

#[cfg(test)]
mod rounding_tests {
    use super::round2;

    #[test]
    fn cents_round_and_negative_zero_is_zero() {
        assert_eq!(round2(12.345_6), 12.35);
        assert!(round2(-0.0).is_sign_positive());
        assert!(round2(-0.001).is_sign_positive());
        assert_eq!(round2(-1.234), -1.23);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use kizuna_ingest::{Endpoint, Limits, parse_request};
    use serde_json::json;

    fn t(day: u32) -> String {
        Utc.with_ymd_and_hms(2026, 1, day, 10, 0, 0).single().expect("valid").to_rfc3339()
    }

    fn event(kind: MessageType, body: Value) -> Event {
        let mut parsed =
            parse_request(Endpoint::Single(kind), body.to_string().as_bytes(), Utc::now(), &Limits::default())
                .expect("valid message");
        parsed.events.remove(0)
    }

    fn origin() -> Origin {
        Origin { source: "web".into(), data_kind: DataKind::FirstParty }
    }

    fn order(id: &str, day: u32, total: f64) -> Event {
        event(
            MessageType::Track,
            json!({"userId": "u", "event": "Order Completed", "timestamp": t(day), "properties": {
                "order_id": id, "total": total, "currency": "JPY",
                "products": [{"product_id": "p1", "price": total, "quantity": 1, "category": "Coffee", "brand": "Kizuna Roasters"}]}}),
        )
    }

    fn fold(events: &[Event]) -> ProfileState {
        let mut state = ProfileState::default();
        for e in events {
            state.apply(e, &origin());
        }
        state
    }

    #[test]
    fn orders_revenue_aov_and_refunds() {
        let refund = event(
            MessageType::Track,
            json!({"userId": "u", "event": "Order Refunded", "timestamp": t(9), "properties": {"order_id": "o2", "total": 10.0}}),
        );
        let state = fold(&[order("o1", 2, 30.0), order("o2", 5, 50.0), order("o2", 5, 50.0), refund]);
        let s = state.computed.summary();
        assert_eq!(s["orders_count"], json!(2), "a repeated order report counts once");
        assert_eq!(s["revenue"], json!(80.0));
        assert_eq!(s["net_revenue"], json!(70.0));
        assert_eq!(s["aov"], json!(40.0));
        assert_eq!(s["first_order_value"], json!(30.0));
        assert_eq!(s["last_order_value"], json!(50.0));
        assert_eq!(s["refunds_count"], json!(1));
        assert_eq!(s["currency"], json!("JPY"));
        assert_eq!(s["category_affinity"], json!({"Coffee": 1.0}));
    }

    #[test]
    fn traits_last_write_wins_by_event_time_not_arrival() {
        let newer =
            event(MessageType::Identify, json!({"userId": "u", "timestamp": t(5), "traits": {"city": "Osaka"}}));
        let older = event(
            MessageType::Identify,
            json!({"userId": "u", "timestamp": t(3), "traits": {"city": "Tokyo", "name": "Aiko"}}),
        );
        let state = fold(&[newer.clone(), older.clone()]);
        assert_eq!(state.traits["city"].value, json!("Osaka"));
        assert_eq!(state.traits["name"].value, json!("Aiko"));
        assert_eq!(state, fold(&[older, newer]));
    }

    #[test]
    fn consent_from_traits_with_source_and_time() {
        let e = event(
            MessageType::Identify,
            json!({"userId": "u", "timestamp": t(4), "traits": {"consent": {"email": {"marketing": "granted"}, "sms": false, "fax": true}}}),
        );
        let state = fold(&[e]);
        assert_eq!(state.consent["email"]["marketing"].status, ConsentStatus::Granted);
        assert_eq!(state.consent["email"]["marketing"].source, "web");
        assert_eq!(state.consent["sms"]["transactional"].status, ConsentStatus::Denied);
        assert!(!state.consent.contains_key("fax"));
        assert!(!state.traits.contains_key("consent"));
    }

    #[test]
    fn views_locations_and_data_kind() {
        let view = |day, id: &str| {
            event(
                MessageType::Track,
                json!({"anonymousId": "a", "event": "Product Viewed", "timestamp": t(day),
                       "properties": {"product_id": id, "category": "Shoes", "brand": "B"},
                       "context": {"timezone": "Asia/Tokyo", "location": {"country": "JP", "city": "Tokyo"}}}),
            )
        };
        let quiz = event(
            MessageType::Identify,
            json!({"userId": "u", "timestamp": t(1), "traits": {"skin_type": "dry"}, "context": {"dataKind": "zero_party"}}),
        );
        let state = fold(&[view(1, "p1"), view(3, "p2"), view(2, "p1"), quiz]);
        let s = state.computed.summary();
        assert_eq!(s["last_viewed_products"][0]["product_id"], json!("p2"));
        assert_eq!(s["last_viewed_products"][1]["product_id"], json!("p1"));
        assert_eq!(s["city"], json!("Tokyo"));
        assert_eq!(s["timezone"], json!("Asia/Tokyo"));
        assert_eq!(s["event_counts"]["Product Viewed"], json!(3));
        assert_eq!(state.traits["skin_type"].data_kind, DataKind::ZeroParty);
    }

    #[test]
    fn a_repeated_place_time_zone_or_locale_moves_its_stamp() {
        let seen = |day, city: &str, zone: &str| {
            event(
                MessageType::Page,
                json!({"anonymousId": "a", "name": "Home", "timestamp": t(day),
                       "context": {"timezone": zone, "locale": zone, "location": {"country": "JP", "city": city}}}),
            )
        };
        // Osaka on day 4 is older than Tokyo's repeat on day 5, so Tokyo stays; had the repeat not moved the
        // stamp (held from day 3), Osaka would win.
        let state = fold(&[
            seen(3, "Tokyo", "Asia/Tokyo"),
            seen(1, "Osaka", "Asia/Osaka"),
            seen(5, "Tokyo", "Asia/Tokyo"),
            seen(4, "Osaka", "Asia/Osaka"),
        ]);
        let s = state.computed.summary();
        assert_eq!(
            (&s["city"], &s["timezone"], &s["locale"]),
            (&json!("Tokyo"), &json!("Asia/Tokyo"), &json!("Asia/Tokyo"))
        );
        // A newer different place still replaces it.
        let state =
            fold(&[seen(3, "Tokyo", "Asia/Tokyo"), seen(5, "Tokyo", "Asia/Tokyo"), seen(6, "Osaka", "Asia/Osaka")]);
        let s = state.computed.summary();
        assert_eq!(
            (&s["city"], &s["timezone"], &s["locale"]),
            (&json!("Osaka"), &json!("Asia/Osaka"), &json!("Asia/Osaka"))
        );
    }

    #[test]
    fn merging_two_states_equals_folding_all_their_events() {
        let view = |day, category: &str, id: &str| {
            event(
                MessageType::Track,
                json!({"anonymousId": "a", "event": "Product Viewed", "timestamp": t(day),
                       "properties": {"product_id": id, "category": category, "brand": "B"},
                       "context": {"timezone": format!("Zone/{day}"), "location": {"country": "JP", "city": format!("C{day}")}}}),
            )
        };
        let identify = |day, city: &str| {
            event(
                MessageType::Identify,
                json!({"userId": "u", "timestamp": t(day),
                "traits": {"city": city, "consent": {"email": {"marketing": if day % 2 == 0 { "granted" } else { "denied" }}}}}),
            )
        };
        let refund = event(
            MessageType::Track,
            json!({"userId": "u", "event": "Order Refunded", "timestamp": t(12), "properties": {"order_id": "o1", "total": 5.0}}),
        );
        let mine = [view(1, "Bags", "p1"), order("o1", 3, 30.0), identify(4, "Osaka"), view(9, "Shoes", "p2")];
        let theirs =
            [view(2, "Shoes", "p3"), order("o2", 6, 50.0), identify(7, "Kyoto"), refund, view(5, "Bags", "p1")];
        let mut merged = fold(&mine);
        merged.merge(fold(&theirs));
        let all: Vec<Event> = mine.iter().chain(theirs.iter()).cloned().collect();
        let whole = fold(&all);
        assert_eq!(merged.traits, whole.traits);
        assert_eq!(merged.consent, whole.consent);
        assert_eq!(merged.computed.summary(), whole.computed.summary());
        let mut other_way = fold(&theirs);
        other_way.merge(fold(&mine));
        assert_eq!(other_way.computed.summary(), whole.computed.summary());
    }

    #[test]
    fn affinity_decays_with_time() {
        let view = |day, category: &str| {
            event(
                MessageType::Track,
                json!({"anonymousId": "a", "event": "Product Viewed", "timestamp": t(day),
                       "properties": {"product_id": "x", "category": category}}),
            )
        };
        // One old view of Bags against one recent view of Shoes: the recent interest weighs more.
        let state = fold(&[view(1, "Bags"), view(31, "Shoes")]);
        let s = state.computed.summary();
        let (bags, shoes) = (s["category_affinity"]["Bags"].as_f64(), s["category_affinity"]["Shoes"].as_f64());
        assert!(bags < shoes, "{bags:?} < {shoes:?}");
        let reversed = fold(&[view(31, "Shoes"), view(1, "Bags")]);
        assert_eq!(reversed.computed.summary()["category_affinity"], s["category_affinity"]);
    }
}
