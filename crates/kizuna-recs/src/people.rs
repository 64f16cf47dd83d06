//! What recommendations keep per person — recent touches, places, taste — packed, because there is one of
//! each for every shopper of the store: at a million profiles every byte here is a megabyte.

use crate::recommend::Taste;
use crate::{ItemIx, Secs};
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
    pub(crate) fn slot(self) -> usize {
        match self {
            Kind::View => 0,
            Kind::Cart => 1,
            Kind::Purchase => 2,
        }
    }

    fn from_slot(slot: u32) -> Kind {
        match slot {
            0 => Kind::View,
            1 => Kind::Cart,
            _ => Kind::Purchase,
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

/// Products with an index at or above this are not kept in histories (the kind shares the item's word).
const MAX_HISTORY_ITEM: ItemIx = (1 << KIND_SHIFT) - 1;
const KIND_SHIFT: u32 = 30;

/// A touch in 12 bytes: the kind in the item word's top two bits, the time as unsigned seconds (1970–2106;
/// earlier times count as 1970).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Packed {
    item_kind: u32,
    at: u32,
    units: f32,
}

fn packed_time(at: Secs) -> u32 {
    at.clamp(0, Secs::from(u32::MAX)) as u32
}

impl Packed {
    fn new(touch: Touch) -> Packed {
        debug_assert!(touch.item <= MAX_HISTORY_ITEM);
        Packed {
            item_kind: touch.item | ((touch.kind.slot() as u32) << KIND_SHIFT),
            at: packed_time(touch.at),
            units: touch.units,
        }
    }

    fn kind(self) -> Kind {
        Kind::from_slot(self.item_kind >> KIND_SHIFT)
    }

    fn touch(self) -> Touch {
        Touch { item: self.item_kind & MAX_HISTORY_ITEM, kind: self.kind(), at: Secs::from(self.at), units: self.units }
    }
}

/// A profile's recent touches in time order: the newest non-purchases (up to [`History::RECENT`]) and
/// purchases (up to [`History::PURCHASES`]), which replenishment and "exclude purchased" need further back.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct History {
    /// Exactly as long as it needs to be: histories grow by one, and most stay short.
    touches: Vec<Packed>,
}

impl History {
    pub const RECENT: usize = 50;
    pub const PURCHASES: usize = 100;

    /// Oldest first.
    pub fn touches(&self) -> impl DoubleEndedIterator<Item = Touch> + ExactSizeIterator + '_ {
        self.touches.iter().map(|p| p.touch())
    }

    pub fn len(&self) -> usize {
        self.touches.len()
    }

    pub fn is_empty(&self) -> bool {
        self.touches.is_empty()
    }

    pub(crate) fn add(&mut self, touch: Touch) {
        if touch.item > MAX_HISTORY_ITEM {
            return;
        }
        let packed = Packed::new(touch);
        let at = self.touches.partition_point(|t| t.at <= packed.at);
        self.touches.reserve_exact(1);
        self.touches.insert(at, packed);
        let purchase = touch.kind == Kind::Purchase;
        let is_same_group = |t: &Packed| (t.kind() == Kind::Purchase) == purchase;
        let cap = if purchase { Self::PURCHASES } else { Self::RECENT };
        if self.touches.iter().filter(|t| is_same_group(t)).count() > cap
            && let Some(oldest) = self.touches.iter().position(is_same_group)
        {
            self.touches.remove(oldest);
        }
    }

    /// Whether the profile bought this item (within what is kept).
    pub fn bought(&self, item: ItemIx) -> bool {
        self.touches().any(|t| t.item == item && t.kind == Kind::Purchase)
    }

    pub(crate) fn last_purchase_before(&self, item: ItemIx, at: Secs) -> Option<Secs> {
        self.touches().rev().find(|t| t.item == item && t.kind == Kind::Purchase && t.at < at).map(|t| t.at)
    }

    pub(crate) fn purchases(&self) -> Vec<(ItemIx, f32)> {
        self.touches().filter(|t| t.kind == Kind::Purchase).map(|t| (t.item, t.units)).collect()
    }
}

/// Strings by number: place keys, and the category, brand and price-band names of tastes.
#[derive(Debug, Clone, Default)]
pub(crate) struct Interner {
    names: Vec<String>,
    ids: HashMap<String, u32>,
}

impl Interner {
    pub(crate) fn id(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.ids.get(name) {
            return id;
        }
        let id = self.names.len() as u32;
        self.names.push(name.to_owned());
        self.ids.insert(name.to_owned(), id);
        id
    }

    pub(crate) fn name(&self, id: u32) -> &str {
        self.names.get(id as usize).map_or("", String::as_str)
    }

    pub(crate) fn names(&self) -> &[String] {
        &self.names
    }
}

const NONE: u32 = u32::MAX;

/// A [`Taste`] with its names interned: category shares then brand shares in one slice.
#[derive(Debug, Clone)]
struct PackedTaste {
    shares: Box<[(u32, f32)]>,
    categories: u8,
    price_band: u32,
}

impl Default for PackedTaste {
    fn default() -> Self {
        Self { shares: Box::default(), categories: 0, price_band: NONE }
    }
}

/// Where a person is: up to three place ids (city, region, country), most specific first.
pub(crate) const MAX_PLACES: usize = 3;

#[derive(Debug, Clone)]
struct Person {
    profile: ProfileKey,
    history: History,
    places: [u32; MAX_PLACES],
    taste: PackedTaste,
}

impl Person {
    fn new(profile: ProfileKey) -> Self {
        Self { profile, history: History::default(), places: [NONE; MAX_PLACES], taste: PackedTaste::default() }
    }
}

/// Every person recommendations know, in one dense array, found through their profile id: ids are small and
/// dense (the identity graph hands them out in sequence), so the index is a vector of slot numbers by id, 4 bytes
/// a profile id, where a hash table of (id, slot) pairs took 16 bytes a slot at between half and seven eighths
/// load (4.2 MB at 117k people against 0.5 MB). A hash table of the people themselves would leave half its
/// 80-byte slots empty after each doubling.
#[derive(Debug, Clone, Default)]
pub(crate) struct People {
    /// Slot number by profile id; [`NONE`] for a profile without one.
    index: Vec<u32>,
    slots: Vec<Person>,
}

impl People {
    fn slot_number(&self, profile: ProfileKey) -> Option<usize> {
        let slot = *self.index.get(usize::try_from(profile).ok()?)?;
        (slot != NONE).then_some(slot as usize)
    }

    fn slot(&self, profile: ProfileKey) -> Option<&Person> {
        self.slot_number(profile).map(|i| &self.slots[i])
    }

    fn slot_mut(&mut self, profile: ProfileKey) -> &mut Person {
        if let Some(i) = self.slot_number(profile) {
            return &mut self.slots[i];
        }
        // Ids come from the store's sequence, never from outside (and a u64 is a usize on the 64-bit targets built).
        let at = profile as usize;
        if at >= self.index.len() {
            self.index.resize(at + 1, NONE);
        }
        let i = self.slots.len() as u32;
        self.index[at] = i;
        if self.slots.len() == self.slots.capacity() {
            // Grow by an eighth, not double: the array is most of what recommendations hold per person.
            self.slots.reserve_exact((self.slots.len() / 8).max(64));
        }
        self.slots.push(Person::new(profile));
        &mut self.slots[i as usize]
    }

    pub(crate) fn contains(&self, profile: ProfileKey) -> bool {
        self.slot_number(profile).is_some()
    }

    /// Forgets a person; returns their history and places.
    pub(crate) fn remove(&mut self, profile: ProfileKey) -> Option<(History, Vec<u32>)> {
        let i = self.slot_number(profile)?;
        self.index[profile as usize] = NONE;
        let person = self.slots.swap_remove(i);
        if let Some(moved) = self.slots.get(i) {
            self.index[moved.profile as usize] = i as u32;
        }
        Some((person.history, person.places.iter().copied().filter(|&p| p != NONE).collect()))
    }

    pub(crate) fn history(&self, profile: ProfileKey) -> Option<&History> {
        self.slot(profile).map(|p| &p.history).filter(|h| !h.is_empty())
    }

    pub(crate) fn history_mut(&mut self, profile: ProfileKey) -> &mut History {
        &mut self.slot_mut(profile).history
    }

    pub(crate) fn set_history(&mut self, profile: ProfileKey, history: History) {
        if history.is_empty() && !self.contains(profile) {
            return;
        }
        self.slot_mut(profile).history = history;
    }

    pub(crate) fn places(&self, profile: ProfileKey) -> Vec<u32> {
        self.slot(profile).map_or_else(Vec::new, |p| p.places.iter().copied().filter(|&id| id != NONE).collect())
    }

    /// At most [`MAX_PLACES`] are kept.
    pub(crate) fn set_places(&mut self, profile: ProfileKey, places: &[u32]) {
        if places.is_empty() && !self.contains(profile) {
            return;
        }
        let mut packed = [NONE; MAX_PLACES];
        for (slot, &id) in packed.iter_mut().zip(places) {
            *slot = id;
        }
        self.slot_mut(profile).places = packed;
    }

    pub(crate) fn set_taste(&mut self, profile: ProfileKey, taste: &Taste, names: &mut Interner) {
        let shares: Box<[(u32, f32)]> =
            taste.categories.iter().chain(&taste.brands).map(|(name, share)| (names.id(name), *share)).collect();
        let packed = PackedTaste {
            shares,
            categories: taste.categories.len().min(usize::from(u8::MAX)) as u8,
            price_band: taste.price_band.as_deref().map_or(NONE, |band| names.id(band)),
        };
        self.slot_mut(profile).taste = packed;
    }

    pub(crate) fn taste(&self, profile: ProfileKey, names: &Interner) -> Option<Taste> {
        let taste = &self.slot(profile)?.taste;
        let named = |s: &[(u32, f32)]| s.iter().map(|&(id, share)| (names.name(id).to_owned(), share)).collect();
        let (categories, brands) = taste.shares.split_at(usize::from(taste.categories).min(taste.shares.len()));
        Some(Taste {
            categories: named(categories),
            brands: named(brands),
            price_band: (taste.price_band != NONE).then(|| names.name(taste.price_band).to_owned()),
        })
    }

    /// Loading builds every history one touch at a time and every taste per profile, interleaved with the
    /// loader's short-lived allocations (parsed events), so they end up scattered over partly used allocator pages
    /// that never become empty enough to return. Copying them out to flat buffers, freeing them all, then
    /// allocating each again at its exact size packs them into fresh pages and lets the emptied ones go.
    pub(crate) fn repack(&mut self) {
        let mut touches = Vec::with_capacity(self.slots.iter().map(|p| p.history.touches.len()).sum());
        let mut shares = Vec::with_capacity(self.slots.iter().map(|p| p.taste.shares.len()).sum());
        let mut lengths = Vec::with_capacity(self.slots.len());
        for person in &mut self.slots {
            let history = std::mem::take(&mut person.history.touches);
            let taste = std::mem::take(&mut person.taste.shares);
            lengths.push((history.len(), taste.len()));
            touches.extend_from_slice(&history);
            shares.extend_from_slice(&taste);
        }
        let (mut touches, mut shares) = (&touches[..], &shares[..]);
        for (person, (history, taste)) in self.slots.iter_mut().zip(lengths) {
            let (mine, rest) = touches.split_at(history);
            person.history.touches = mine.to_vec();
            touches = rest;
            let (mine, rest) = shares.split_at(taste);
            person.taste.shares = mine.into();
            shares = rest;
        }
    }

    /// People with a history.
    pub(crate) fn histories(&self) -> impl Iterator<Item = (ProfileKey, &History)> {
        self.slots.iter().filter(|p| !p.history.is_empty()).map(|p| (p.profile, &p.history))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_touch_keeps_its_item_kind_time_and_units() {
        for kind in [Kind::View, Kind::Cart, Kind::Purchase] {
            let touch = Touch { item: MAX_HISTORY_ITEM, kind, at: 1_700_000_000, units: 2.5 };
            assert_eq!(Packed::new(touch).touch(), touch);
        }
        assert_eq!(std::mem::size_of::<Packed>(), 12);
    }

    #[test]
    fn repacking_keeps_every_history_and_taste_at_its_exact_size() {
        let mut people = People::default();
        let mut names = Interner::default();
        for id in 0..50u64 {
            for t in 0..(id % 7) {
                let kind = if t % 3 == 0 { Kind::Purchase } else { Kind::View };
                people.history_mut(id).add(Touch {
                    item: (id * t) as ItemIx,
                    kind,
                    at: (100 * t + id) as Secs,
                    units: 1.0,
                });
            }
            let taste = Taste {
                categories: (0..id % 4).map(|c| (format!("c{c}"), 0.25)).collect(),
                brands: (0..id % 3).map(|b| (format!("b{b}"), 0.5)).collect(),
                price_band: (id % 2 == 0).then(|| "mid".to_owned()),
            };
            people.set_taste(id, &taste, &mut names);
        }
        for id in (0..50u64).step_by(5) {
            people.history_mut(id).touches.reserve(8);
        }
        assert!(people.slots.iter().any(|p| p.history.touches.capacity() > p.history.touches.len()));
        let before = format!("{:?}", people.slots);
        people.repack();
        assert_eq!(format!("{:?}", people.slots), before);
        assert!(people.slots.iter().all(|p| p.history.touches.capacity() == p.history.touches.len()));
        assert!(
            people.slots.iter().any(|p| p.history.len() > 1) && people.slots.iter().any(|p| p.taste.shares.len() > 1)
        );
    }

    #[test]
    fn removing_a_person_keeps_the_others_reachable() {
        let mut people = People::default();
        let mut names = Interner::default();
        for id in [7, 8, 9] {
            people.set_places(id, &[id as u32]);
        }
        let taste = Taste {
            categories: vec![("shoes".into(), 0.75)],
            brands: vec![("acme".into(), 1.0)],
            price_band: Some("mid".into()),
        };
        people.set_taste(9, &taste, &mut names);
        assert_eq!(people.remove(7).map(|(_, places)| places), Some(vec![7]));
        assert!(!people.contains(7));
        assert_eq!(people.places(9), vec![9]);
        assert_eq!(people.places(8), vec![8]);
        assert_eq!(people.taste(9, &names), Some(taste));
        assert_eq!(people.taste(8, &names), Some(Taste::default()));
        assert_eq!(people.taste(7, &names), None);
    }
}
