use crate::index::product_from_event;
pub use crate::people::{History, Kind, ProfileKey, Touch};
use crate::people::{Interner, People};
use crate::recommend::Taste;
use crate::{DAY, ItemIndex, ItemIx, Secs, day_of};
use kizuna_catalog::Product;
use serde_json::Value;
use std::collections::HashMap;

/// Per product, per day: views, carts and purchased units.
type Daily = Vec<(i32, [f32; 3])>;

/// Products that events may add beyond the catalog (unknown ids are kept with what the event said about them;
/// past this many, events about further unknown products are ignored).
pub const MAX_EVENT_PRODUCTS: usize = 200_000;

/// The counters recommendations learn from, updated event by event. Aggregates hold no personal data; the
/// per-profile histories are dropped when a person is erased.
///
/// Event times must not lie in the future (callers clamp them to now): daily counters keep the `keep_days`
/// before the newest day seen.
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
    /// Per product: how many people bought it, and how many of them bought it again.
    buyers: Vec<u32>,
    rebuyers: Vec<u32>,
    /// Place keys (`country:jp`, `region:jp/13`, `city:tokyo`) by number, and purchased units per product in
    /// each place.
    places: Interner,
    place_units: Vec<HashMap<ItemIx, f32>>,
    /// Each person's history, places and taste.
    people: People,
    /// Category, brand and price-band names of tastes.
    taste_names: Interner,
    catalog_products: usize,
    event_products: usize,
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
            rebuyers: Vec::new(),
            places: Interner::default(),
            place_units: Vec::new(),
            people: People::default(),
            taste_names: Interner::default(),
            catalog_products: 0,
            event_products: 0,
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
        let known = self.items.ix(&product.id).map(|ix| self.items.item(ix).in_catalog);
        match known {
            None => self.catalog_products += 1,
            Some(false) => {
                self.catalog_products += 1;
                self.event_products -= 1;
            }
            Some(true) => {}
        }
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
        self.rebuyers.resize(n, 0);
    }

    fn observe(&mut self, props: &Value) -> Option<ItemIx> {
        let id = product_id(props)?;
        if self.items.ix(&id).is_none() {
            if self.event_products >= MAX_EVENT_PRODUCTS {
                return None;
            }
            self.event_products += 1;
        }
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
            self.people.history_mut(profile).add(*touch);
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
        let places = if touch.kind == Kind::Purchase { self.people.places(profile) } else { Vec::new() };
        let history = self.people.history_mut(profile);
        match touch.kind {
            Kind::View => {
                let window = self.co_view_window;
                let near = |t: &Touch| t.kind == Kind::View && (t.at - touch.at).abs() <= window;
                // A pair counts once per person per window: not again when this product was already viewed
                // in the window, and each other product once however often it was viewed.
                if !history.touches().filter(near).any(|t| t.item == touch.item) {
                    let mut others: Vec<ItemIx> = history.touches().filter(near).map(|t| t.item).collect();
                    others.sort_unstable();
                    others.dedup();
                    for other in others {
                        *self.co_view[touch.item as usize].entry(other).or_default() += 1;
                        *self.co_view[other as usize].entry(touch.item).or_default() += 1;
                    }
                }
            }
            Kind::Purchase => {
                let before = history.touches().filter(|t| t.item == touch.item && t.kind == Kind::Purchase).count();
                if before == 0 {
                    self.buyers[touch.item as usize] += 1;
                } else if before == 1 {
                    self.rebuyers[touch.item as usize] += 1;
                }
                if let Some(earlier) = history.last_purchase_before(touch.item, touch.at)
                    && touch.at - earlier >= DAY
                {
                    let gap = &mut self.repeat_gaps[touch.item as usize];
                    gap.0 += (touch.at - earlier) as f64 / DAY as f64;
                    gap.1 += 1;
                }
                for place in places {
                    *self.place_units[place as usize].entry(touch.item).or_default() += touch.units;
                }
            }
            Kind::Cart => {}
        }
    }

    fn place_id(&mut self, key: &str) -> u32 {
        let id = self.places.id(key);
        if self.place_units.len() <= id as usize {
            self.place_units.resize_with(id as usize + 1, HashMap::new);
        }
        id
    }

    /// Adds (`sign` 1) or removes (−1) a history's purchases in these places.
    fn count_places(&mut self, purchases: &[(ItemIx, f32)], places: &[u32], sign: f32) {
        for &place in places {
            let counts = &mut self.place_units[place as usize];
            for &(item, units) in purchases {
                let c = counts.entry(item).or_default();
                *c = (*c + sign * units).max(0.0);
            }
        }
    }

    fn purchases_of(&self, profile: ProfileKey) -> Vec<(ItemIx, f32)> {
        self.people.history(profile).map_or_else(Vec::new, History::purchases)
    }

    /// Packs what is kept per person densely in memory; call once after loading (see `People::repack`).
    pub fn repack(&mut self) {
        self.people.repack();
    }

    /// Where a profile is (place keys such as `country:jp`, `city:tokyo`; up to three, most specific first):
    /// its purchases count there.
    pub fn set_places(&mut self, profile: ProfileKey, places: Vec<String>) {
        let ids: Vec<u32> = places.iter().take(crate::people::MAX_PLACES).map(|p| self.place_id(p)).collect();
        let old = self.people.places(profile);
        if old == ids {
            return;
        }
        let purchases = self.purchases_of(profile);
        self.count_places(&purchases, &old, -1.0);
        self.count_places(&purchases, &ids, 1.0);
        self.people.set_places(profile, &ids);
        self.generation += 1;
    }

    /// What a person likes (from their profile's computed attributes), kept for serving.
    pub fn set_taste(&mut self, profile: ProfileKey, taste: &Taste) {
        self.people.set_taste(profile, taste, &mut self.taste_names);
    }

    pub fn taste(&self, profile: ProfileKey) -> Option<Taste> {
        self.people.taste(profile, &self.taste_names)
    }

    /// `from` was merged into `into`: one history now, counted where `into` is (or where `from` was, when
    /// `into`'s place is unknown). `from`'s taste goes: `into`'s profile state says what the merged person likes.
    pub fn merge(&mut self, from: ProfileKey, into: ProfileKey) {
        let (gone_history, gone_places) = self.people.remove(from).unwrap_or_default();
        let gone_purchases = gone_history.purchases();
        self.count_places(&gone_purchases, &gone_places, -1.0);
        let mut target_places = self.people.places(into);
        if target_places.is_empty() && !gone_places.is_empty() {
            let into_purchases = self.purchases_of(into);
            self.count_places(&into_purchases, &gone_places, 1.0);
            self.people.set_places(into, &gone_places);
            target_places = gone_places;
        }
        self.count_places(&gone_purchases, &target_places, 1.0);
        if !gone_history.is_empty() {
            let target = self.people.history_mut(into);
            for touch in gone_history.touches() {
                target.add(touch);
            }
        }
        self.generation += 1;
    }

    /// A person was erased or left without identifiers: their history, places and taste go (aggregate
    /// counters stay: they hold no personal data).
    pub fn remove(&mut self, profile: ProfileKey) {
        if let Some((history, places)) = self.people.remove(profile)
            && (!history.is_empty() || !places.is_empty())
        {
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
        let places = self.people.places(profile);
        let old = self.purchases_of(profile);
        self.count_places(&old, &places, -1.0);
        self.count_places(&history.purchases(), &places, 1.0);
        self.people.set_history(profile, history);
        self.generation += 1;
    }

    pub fn history(&self, profile: ProfileKey) -> Option<&History> {
        self.people.history(profile)
    }

    /// The place keys a profile's purchases count in, most specific first.
    pub fn places_of(&self, profile: ProfileKey) -> Vec<String> {
        self.people.places(profile).into_iter().map(|id| self.places.name(id).to_owned()).collect()
    }

    /// Whether this profile is known here (it has a history, a place or a taste).
    pub fn knows(&self, profile: ProfileKey) -> bool {
        self.people.contains(profile)
    }

    /// Profiles with a history.
    pub fn profiles(&self) -> impl Iterator<Item = (ProfileKey, &History)> {
        self.people.histories()
    }

    pub fn profile_count(&self) -> usize {
        self.people.histories().count()
    }

    /// Whether the store has a catalog (products upserted, not only seen in events).
    pub fn has_catalog(&self) -> bool {
        self.catalog_products > 0
    }

    /// A product's daily (day, [views, carts, units]) counters, oldest first.
    pub fn daily(&self, item: ItemIx) -> impl Iterator<Item = (i32, [f32; 3])> + '_ {
        self.daily.get(item as usize).into_iter().flatten().copied()
    }

    /// Products bought in the same baskets as `a`, with how many baskets had both.
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

    /// A product people re-buy: tagged `replenishable`, or bought again by at least two people and by at least
    /// 15% of its buyers (shoes bought twice by chance are not consumables).
    pub fn replenishable(&self, item: ItemIx) -> bool {
        if self.items.product(item).tags.iter().any(|t| t.eq_ignore_ascii_case("replenishable")) {
            return true;
        }
        let rebuyers = self.rebuyers.get(item as usize).copied().unwrap_or(0);
        let buyers = self.buyers.get(item as usize).copied().unwrap_or(0);
        rebuyers >= 2 && f64::from(rebuyers) >= 0.15 * f64::from(buyers)
    }

    /// Every place with its purchased units per product.
    pub fn place_units(&self) -> impl Iterator<Item = (&str, &HashMap<ItemIx, f32>)> {
        self.places.names().iter().map(String::as_str).zip(&self.place_units)
    }
}
