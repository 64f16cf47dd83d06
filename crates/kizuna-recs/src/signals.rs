use crate::index::product_from_event;
use crate::{DAY, ItemIndex, ItemIx, Secs, day_of};
use kizuna_catalog::Product;
use serde_json::Value;
use std::collections::HashMap;

/// A profile as recommendations know it (the store's profile id).
pub type ProfileKey = u64;

/// What a person did with a product; each kind weighs differently as implicit feedback.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    View,
    Cart,
    Purchase,
}

impl Kind {
    fn slot(self) -> usize {
        match self {
            Kind::View => 0,
            Kind::Cart => 1,
            Kind::Purchase => 2,
        }
    }

    /// Implicit-feedback weight: a purchase says more than a cart, a cart more than a view.
    pub fn weight(self) -> f32 {
        match self {
            Kind::View => 1.0,
            Kind::Cart => 3.0,
            Kind::Purchase => 5.0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Touch {
    pub item: ItemIx,
    pub kind: Kind,
    pub at: Secs,
    pub units: f32,
}

/// A profile's recent touches in time order: the newest non-purchases (up to [`History::RECENT`]) and
/// purchases (up to [`History::PURCHASES`]), which replenishment and "exclude purchased" need further back.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct History {
    touches: Vec<Touch>,
}

impl History {
    pub const RECENT: usize = 50;
    pub const PURCHASES: usize = 100;

    pub fn touches(&self) -> &[Touch] {
        &self.touches
    }

    fn add(&mut self, touch: Touch) {
        let at = self.touches.partition_point(|t| t.at <= touch.at);
        self.touches.insert(at, touch);
        let purchase = touch.kind == Kind::Purchase;
        let (cap, count) = if purchase {
            (Self::PURCHASES, self.touches.iter().filter(|t| t.kind == Kind::Purchase).count())
        } else {
            (Self::RECENT, self.touches.iter().filter(|t| t.kind != Kind::Purchase).count())
        };
        if count > cap
            && let Some(oldest) = self.touches.iter().position(|t| (t.kind == Kind::Purchase) == purchase)
        {
            self.touches.remove(oldest);
        }
    }

    /// Whether the profile bought this item (within what is kept).
    pub fn bought(&self, item: ItemIx) -> bool {
        self.touches.iter().any(|t| t.item == item && t.kind == Kind::Purchase)
    }

    fn last_purchase_before(&self, item: ItemIx, at: Secs) -> Option<Secs> {
        self.touches.iter().rev().find(|t| t.item == item && t.kind == Kind::Purchase && t.at < at).map(|t| t.at)
    }
}

#[derive(Debug, Clone, Default)]
struct ProfileEntry {
    history: History,
    places: Vec<String>,
}

/// Per product, per day: views, carts and purchased units.
type Daily = Vec<(i32, [f32; 3])>;

/// The counters recommendations learn from, updated event by event. Aggregates hold no personal data; the
/// per-profile histories are dropped when a person is erased.
#[derive(Debug, Clone)]
pub struct Signals {
    pub items: ItemIndex,
    daily: Vec<Daily>,
    co_purchase: Vec<HashMap<ItemIx, u32>>,
    baskets_with: Vec<u32>,
    baskets: u64,
    co_view: Vec<HashMap<ItemIx, u32>>,
    /// Per product: sum of days between a person's consecutive purchases of it, and how many such gaps.
    repeat_gaps: Vec<(f64, u32)>,
    /// Per product: how many people bought it (within their kept histories).
    buyers: Vec<u32>,
    /// Per place key (`country:JP`, `region:JP/13`, `city:Tokyo`): purchased units per product.
    places: HashMap<String, HashMap<ItemIx, f32>>,
    profiles: HashMap<ProfileKey, ProfileEntry>,
    /// Days of daily counters kept (the longest window any ranking reads).
    pub keep_days: i32,
    /// Co-views count when two products are viewed by one person within this many seconds.
    pub co_view_window: Secs,
    generation: u64,
}

impl Default for Signals {
    fn default() -> Self {
        Self {
            items: ItemIndex::default(),
            daily: Vec::new(),
            co_purchase: Vec::new(),
            baskets_with: Vec::new(),
            baskets: 0,
            co_view: Vec::new(),
            repeat_gaps: Vec::new(),
            buyers: Vec::new(),
            places: HashMap::new(),
            profiles: HashMap::new(),
            keep_days: 90,
            co_view_window: 30 * 60,
            generation: 0,
        }
    }
}

fn text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn product_id(props: &Value) -> Option<String> {
    text(props.get("product_id")).or_else(|| text(props.get("sku"))).or_else(|| text(props.get("id")))
}

fn units(props: &Value) -> f32 {
    let q = props.get("quantity").and_then(|v| v.as_f64().or_else(|| v.as_str().and_then(|s| s.parse().ok())));
    q.filter(|q| q.is_finite() && *q > 0.0).map_or(1.0, |q| q.min(1000.0) as f32)
}

impl Signals {
    /// Grows with every change; rankings remember the generation they were built from.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Adds or replaces a catalog product.
    pub fn upsert_product(&mut self, product: Product) -> ItemIx {
        let ix = self.items.upsert(product);
        self.grow();
        self.generation += 1;
        ix
    }

    fn grow(&mut self) {
        let n = self.items.len();
        self.daily.resize_with(n, Vec::new);
        self.co_purchase.resize_with(n, HashMap::new);
        self.baskets_with.resize(n, 0);
        self.co_view.resize_with(n, HashMap::new);
        self.repeat_gaps.resize(n, (0.0, 0));
        self.buyers.resize(n, 0);
    }

    fn observe(&mut self, props: &Value) -> Option<ItemIx> {
        let id = product_id(props)?;
        let ix = self.items.observe(&id, || product_from_event(&id, props));
        if self.daily.len() < self.items.len() {
            self.grow();
        }
        Some(ix)
    }

    /// Folds one event of a profile into the counters and its history. Understands the e-commerce spec
    /// events that name products; returns false for any other event (nothing changed).
    pub fn apply_event(&mut self, profile: ProfileKey, name: &str, at: Secs, properties: &Value) -> bool {
        let touches = self.touches_of(name, at, properties);
        if touches.is_empty() {
            return false;
        }
        if touches[0].kind == Kind::Purchase {
            self.count_basket(&touches);
        }
        for touch in &touches {
            self.count(profile, *touch);
            self.profiles.entry(profile).or_default().history.add(*touch);
        }
        self.generation += 1;
        true
    }

    fn touches_of(&mut self, name: &str, at: Secs, props: &Value) -> Vec<Touch> {
        let name = name.trim().to_ascii_lowercase();
        let one = |this: &mut Self, kind| {
            this.observe(props).map(|item| Touch { item, kind, at, units: units(props) }).into_iter().collect()
        };
        match name.as_str() {
            "product viewed" | "product clicked" => one(self, Kind::View),
            "product added" => one(self, Kind::Cart),
            "order completed" => {
                let mut touches: Vec<Touch> = Vec::new();
                for p in props.get("products").and_then(Value::as_array).into_iter().flatten() {
                    if let Some(item) = self.observe(p) {
                        match touches.iter_mut().find(|t| t.item == item) {
                            Some(t) => t.units += units(p),
                            None => touches.push(Touch { item, kind: Kind::Purchase, at, units: units(p) }),
                        }
                    }
                }
                touches
            }
            _ => Vec::new(),
        }
    }

    fn count_basket(&mut self, touches: &[Touch]) {
        self.baskets += 1;
        for a in touches {
            self.baskets_with[a.item as usize] += 1;
            for b in touches {
                if a.item != b.item {
                    *self.co_purchase[a.item as usize].entry(b.item).or_default() += 1;
                }
            }
        }
    }

    fn count(&mut self, profile: ProfileKey, touch: Touch) {
        let day = day_of(touch.at);
        let daily = &mut self.daily[touch.item as usize];
        let at = daily.partition_point(|(d, _)| *d < day);
        match daily.get_mut(at) {
            Some((d, counts)) if *d == day => counts[touch.kind.slot()] += touch.units,
            _ => {
                let mut counts = [0.0; 3];
                counts[touch.kind.slot()] = touch.units;
                daily.insert(at, (day, counts));
            }
        }
        if let Some((first_day, _)) = daily.first()
            && let Some((last_day, _)) = daily.last()
            && last_day - first_day > self.keep_days
        {
            let cut = last_day - self.keep_days;
            daily.retain(|(d, _)| *d >= cut);
        }
        let entry = self.profiles.entry(profile).or_default();
        match touch.kind {
            Kind::View => {
                let window = self.co_view_window;
                let others: Vec<ItemIx> = entry
                    .history
                    .touches
                    .iter()
                    .filter(|t| t.kind == Kind::View && t.item != touch.item && (t.at - touch.at).abs() <= window)
                    .map(|t| t.item)
                    .collect();
                for other in others {
                    *self.co_view[touch.item as usize].entry(other).or_default() += 1;
                    *self.co_view[other as usize].entry(touch.item).or_default() += 1;
                }
            }
            Kind::Purchase => {
                if !entry.history.bought(touch.item) {
                    self.buyers[touch.item as usize] += 1;
                }
                if let Some(before) = entry.history.last_purchase_before(touch.item, touch.at)
                    && touch.at - before >= DAY
                {
                    let gap = &mut self.repeat_gaps[touch.item as usize];
                    gap.0 += (touch.at - before) as f64 / DAY as f64;
                    gap.1 += 1;
                }
                for place in &entry.places {
                    *self.places.entry(place.clone()).or_default().entry(touch.item).or_default() += touch.units;
                }
            }
            Kind::Cart => {}
        }
    }

    /// Where a profile is (place keys such as `country:JP`, `city:Tokyo`): its purchases count there.
    pub fn set_places(&mut self, profile: ProfileKey, places: Vec<String>) {
        let entry = self.profiles.entry(profile).or_default();
        if entry.places == places {
            return;
        }
        let purchases: Vec<(ItemIx, f32)> =
            entry.history.touches.iter().filter(|t| t.kind == Kind::Purchase).map(|t| (t.item, t.units)).collect();
        let old = std::mem::replace(&mut entry.places, places.clone());
        for place in old {
            if let Some(counts) = self.places.get_mut(&place) {
                for (item, units) in &purchases {
                    if let Some(c) = counts.get_mut(item) {
                        *c = (*c - units).max(0.0);
                    }
                }
            }
        }
        for place in places {
            let counts = self.places.entry(place).or_default();
            for (item, units) in &purchases {
                *counts.entry(*item).or_default() += units;
            }
        }
        self.generation += 1;
    }

    /// `from` was merged into `into`: one history now.
    pub fn merge(&mut self, from: ProfileKey, into: ProfileKey) {
        let Some(gone) = self.profiles.remove(&from) else { return };
        let target = self.profiles.entry(into).or_default();
        for touch in gone.history.touches {
            target.history.add(touch);
        }
        if target.places.is_empty() {
            target.places = gone.places;
        }
        self.generation += 1;
    }

    /// A person was erased or left without identifiers: their history goes (aggregate counters stay: they
    /// hold no personal data).
    pub fn remove(&mut self, profile: ProfileKey) {
        if self.profiles.remove(&profile).is_some() {
            self.generation += 1;
        }
    }

    /// A profile's events were regrouped: its history is rebuilt from them without counting them again.
    pub fn rebuild_history<'a>(
        &mut self,
        profile: ProfileKey,
        events: impl IntoIterator<Item = (&'a str, Secs, &'a Value)>,
    ) {
        let mut history = History::default();
        for (name, at, props) in events {
            for touch in self.touches_of(name, at, props) {
                history.add(touch);
            }
        }
        self.profiles.entry(profile).or_default().history = history;
        self.generation += 1;
    }

    pub fn history(&self, profile: ProfileKey) -> Option<&History> {
        self.profiles.get(&profile).map(|e| &e.history)
    }

    pub fn places_of(&self, profile: ProfileKey) -> &[String] {
        self.profiles.get(&profile).map_or(&[], |e| e.places.as_slice())
    }

    pub fn profiles(&self) -> impl Iterator<Item = (ProfileKey, &History)> {
        self.profiles.iter().map(|(k, e)| (*k, &e.history))
    }

    pub fn profile_count(&self) -> usize {
        self.profiles.len()
    }

    /// A product's daily (day, [views, carts, units]) counters, oldest first.
    pub fn daily(&self, item: ItemIx) -> impl Iterator<Item = (i32, [f32; 3])> + '_ {
        self.daily.get(item as usize).into_iter().flatten().copied()
    }

    /// Views, carts and units bought of a product on days `from..=to`.
    pub fn window(&self, item: ItemIx, from: i32, to: i32) -> [f32; 3] {
        let mut sum = [0.0; 3];
        for (day, counts) in self.daily.get(item as usize).into_iter().flatten() {
            if (from..=to).contains(day) {
                for k in 0..3 {
                    sum[k] += counts[k];
                }
            }
        }
        sum
    }

    /// Baskets with both products, baskets with `a`, baskets with `b`, all baskets.
    pub fn co_purchase(&self, a: ItemIx) -> impl Iterator<Item = (ItemIx, u32)> + '_ {
        self.co_purchase.get(a as usize).into_iter().flatten().map(|(b, n)| (*b, *n))
    }

    pub fn baskets_with(&self, item: ItemIx) -> u32 {
        self.baskets_with.get(item as usize).copied().unwrap_or(0)
    }

    pub fn baskets(&self) -> u64 {
        self.baskets
    }

    pub fn co_views(&self, a: ItemIx) -> impl Iterator<Item = (ItemIx, u32)> + '_ {
        self.co_view.get(a as usize).into_iter().flatten().map(|(b, n)| (*b, *n))
    }

    /// Mean days between repeat purchases of a product across customers, and how many repeats it is from.
    pub fn repeat_interval(&self, item: ItemIx) -> Option<(f64, u32)> {
        let (sum, n) = self.repeat_gaps.get(item as usize).copied()?;
        (n > 0).then(|| (sum / f64::from(n), n))
    }

    /// A product people re-buy: tagged `replenishable`, or at least three re-orders known and re-ordered by
    /// one buyer in seven or more (shoes bought twice by chance are not consumables).
    pub fn replenishable(&self, item: ItemIx) -> bool {
        if self.items.product(item).tags.iter().any(|t| t.eq_ignore_ascii_case("replenishable")) {
            return true;
        }
        let repeats = self.repeat_gaps.get(item as usize).map_or(0, |g| g.1);
        let buyers = self.buyers.get(item as usize).copied().unwrap_or(0);
        repeats >= 3 && f64::from(repeats) >= 0.15 * f64::from(buyers)
    }

    pub fn place_counts(&self, place: &str) -> Option<&HashMap<ItemIx, f32>> {
        self.places.get(place)
    }

    pub fn place_keys(&self) -> impl Iterator<Item = &String> {
        self.places.keys()
    }
}
