//! One simulated person: demographics, identity traits, devices, tastes and lifecycle parameters.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Map, Value};

use crate::catalog::{Catalog, DAY_MS};
use crate::customer::civil_from_days;
use crate::data::{
    CATEGORIES, CITIES, City, DeviceKind, EMAIL_DOMAINS, JP_FIRST, JP_LAST, JP_STREETS, KR_FIRST, KR_LAST,
    LIBRARY_VERSIONS, UA_DESKTOP, UA_MOBILE, UA_TABLET, WEST_FIRST, WEST_LAST, WEST_STREETS, calling_code, locales,
};
use crate::dist::{beta, chance, gamma, index as index_in, lognormal, mix, pick, pick_weighted, unit};

const STREAM_HOUSEHOLD: u64 = 0x4853_4844;
const STREAM_PHONE: u64 = 0x5048_4f4e;

/// Relative popularity of the top-level categories when choosing someone's favourites.
const CATEGORY_APPEAL: [f64; 8] = [1.3, 0.9, 0.9, 1.2, 0.8, 1.1, 0.8, 0.7];

pub(crate) struct Device {
    pub anonymous_id: String,
    pub kind: DeviceKind,
    /// Base `context` object for messages sent from this device.
    pub context: Map<String, Value>,
    pub ip_prefix: &'static str,
}

pub(crate) struct Phone {
    /// As a local person would type it ("090-1234-5678", "(212) 555-0134").
    pub national: String,
    /// E.164 ("+819012345678").
    pub e164: String,
    /// Which form this person usually types.
    pub prefers_national: bool,
}

pub(crate) struct Person {
    pub user_id: String,
    pub city: &'static City,
    pub first: &'static str,
    pub last: &'static str,
    /// Canonical (lowercase, trimmed) email; identify calls sometimes send case/whitespace variants.
    pub email: String,
    pub phone: Option<Phone>,
    pub birthday: Option<String>,
    pub street: String,
    pub postal: String,
    pub devices: Vec<Device>,
    /// Favourite categories with weights.
    pub fav_cats: Vec<(usize, f64)>,
    pub fav_brands: [usize; 2],
    /// Multiplier on the category median price this person gravitates to (gamma-gamma "spend level").
    pub price_tier: f64,
    /// Mean number of extra distinct items per order.
    pub extra_items: f64,
    pub open_p: f64,
    pub click_p: f64,
    pub coupon_affinity: f64,
    pub signup_p: f64,
    // --- lifecycle (BG/NBD spirit) ---
    pub buyer: bool,
    /// Purchase rate while alive, per day.
    pub lambda_per_day: f64,
    /// Probability of becoming inactive after each purchase.
    pub dropout_p: f64,
    /// Rate of non-purchase browse sessions while alive, per day.
    pub browse_per_day: f64,
    /// A consumable category whose products this person replenishes.
    pub staple_cat: Option<usize>,
    pub acquired_ms: i64,
}

/// A deterministic UUID-v4-shaped string.
fn uuid_like(rng: &mut ChaCha8Rng) -> String {
    let a: u64 = rng.random();
    let b: u64 = rng.random();
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0x0fff,
        0x8000 | ((b >> 48) & 0x3fff),
        b & 0xffff_ffff_ffff
    )
}

fn fill_pattern(rng: &mut ChaCha8Rng, pattern: &str) -> String {
    pattern
        .chars()
        .map(|c| match c {
            '#' => char::from(b'0' + rng.random_range(0..10u8)),
            'A' => char::from(b'A' + rng.random_range(0..26u8)),
            other => other,
        })
        .collect()
}

/// A number unique to `id` below `space` (an affine bijection modulo `space`; `space`'s prime factors are
/// only 2 and 5, so any multiplier coprime to 10 works). Keeps phone numbers from colliding by accident.
fn unique_number(id: u64, space: u64, salt: u64) -> u64 {
    ((u128::from(id) * 7_654_321 + u128::from(salt)) % u128::from(space)) as u64
}

/// A personal mobile number, unique per `id` (customer index). Household landlines (`household = true`,
/// `id` = pair index) come from a disjoint range, so only household members ever share a number.
fn phone_number(rng: &mut ChaCha8Rng, city: &City, id: u64, salt: u64, household: bool) -> Phone {
    let prefers_national = chance(rng, 0.55);
    match (city.country_code, household) {
        ("JP", false) => {
            let p = *pick(rng, &["90", "80", "70"]);
            let n = unique_number(id, 100_000_000, salt);
            let (a, b) = (n / 10_000, n % 10_000);
            Phone { national: format!("0{p}-{a:04}-{b:04}"), e164: format!("+81{p}{a:04}{b:04}"), prefers_national }
        }
        ("JP", true) => {
            // Landline: "03-1234-5678" / "045-123-4567" (area code + 9 digits in total).
            let area = city.area;
            let local = 9 - area.len() as u32;
            let n = unique_number(id, 10u64.pow(local), salt);
            let d = format!("{n:0width$}", width = local as usize);
            let split = d.len() - 4;
            Phone {
                national: format!("0{area}-{}-{}", &d[..split], &d[split..]),
                e164: format!("+81{area}{d}"),
                prefers_national: true,
            }
        }
        ("US" | "CA", _) => {
            // Exchange 200–599 for people, 600–999 for household landlines.
            let base = if household { 6_000_000 } else { 2_000_000 };
            let n = base + unique_number(id, 4_000_000, salt);
            let (exchange, line) = (n / 10_000, n % 10_000);
            let area = city.area;
            Phone {
                national: format!("({area}) {exchange}-{line:04}"),
                e164: format!("+1{area}{exchange}{line:04}"),
                prefers_national,
            }
        }
        (cc, _) => {
            let code = calling_code(cc);
            let base = if household { 50_000_000 } else { 0 };
            let n = base + unique_number(id, 50_000_000, salt);
            let d = format!("{n:08}");
            Phone {
                national: format!("0{} {}", &d[..2], &d[2..]),
                e164: format!("+{code}{d}"),
                prefers_national: false,
            }
        }
    }
}

fn names(rng: &mut ChaCha8Rng, country: &str) -> (&'static str, &'static str) {
    match country {
        "JP" => (*pick(rng, &JP_FIRST), *pick(rng, &JP_LAST)),
        "KR" => (*pick(rng, &KR_FIRST), *pick(rng, &KR_LAST)),
        _ => (*pick(rng, &WEST_FIRST), *pick(rng, &WEST_LAST)),
    }
}

fn pick_city(rng: &mut ChaCha8Rng) -> &'static City {
    let total: f64 = CITIES.iter().map(|c| c.weight).sum();
    let mut x = unit(rng) * total;
    for c in &CITIES {
        if x < c.weight {
            return c;
        }
        x -= c.weight;
    }
    &CITIES[0]
}

fn street(rng: &mut ChaCha8Rng, city: &City) -> String {
    if city.country_code == "JP" {
        format!(
            "{}-{}-{} {}",
            rng.random_range(1..6u8),
            rng.random_range(1..30u8),
            rng.random_range(1..20u8),
            pick(rng, &JP_STREETS)
        )
    } else {
        format!("{} {}", rng.random_range(10..2000u16), pick(rng, &WEST_STREETS))
    }
}

/// Shared household facts (a landline, surname, address) for the pair of customers `2k` and `2k+1`.
struct Household {
    city: &'static City,
    last_seed: u64,
    street: String,
    postal: String,
    phone: Phone,
}

fn household(seed: u64, index: usize) -> Option<Household> {
    let mut rng = ChaCha8Rng::seed_from_u64(mix(seed, STREAM_HOUSEHOLD, (index / 2) as u64));
    if !chance(&mut rng, 0.04) {
        return None;
    }
    let city = pick_city(&mut rng);
    let last_seed = rng.random();
    let street = street(&mut rng, city);
    let postal = fill_pattern(&mut rng, city.postal);
    let phone = phone_number(&mut rng, city, (index / 2) as u64, mix(seed, STREAM_HOUSEHOLD, u64::MAX), true);
    Some(Household { city, last_seed, street, postal, phone })
}

fn device(rng: &mut ChaCha8Rng, kind: DeviceKind, city: &City, locale: &'static str) -> Device {
    let ua = match kind {
        DeviceKind::Mobile => *pick(rng, &UA_MOBILE),
        DeviceKind::Desktop => *pick(rng, &UA_DESKTOP),
        DeviceKind::Tablet => *pick(rng, &UA_TABLET),
    };
    let ip_prefix = if chance(rng, 0.5) { "203.0.113." } else { "198.51.100." };
    let ip = format!("{ip_prefix}{}", rng.random_range(1..255u8));
    let mut location = Map::new();
    location.insert("country".into(), Value::from(city.country_name));
    location.insert("region".into(), Value::from(city.region));
    location.insert("city".into(), Value::from(city.city));
    let mut library = Map::new();
    library.insert("name".into(), Value::from("analytics.js"));
    library.insert("version".into(), Value::from(*pick(rng, &LIBRARY_VERSIONS)));
    let mut context = Map::new();
    context.insert("ip".into(), Value::from(ip));
    context.insert("userAgent".into(), Value::from(ua));
    context.insert("locale".into(), Value::from(locale));
    context.insert("timezone".into(), Value::from(city.timezone));
    context.insert("location".into(), Value::Object(location));
    context.insert("library".into(), Value::Object(library));
    Device { anonymous_id: uuid_like(rng), kind, context, ip_prefix }
}

/// Relative acquisition intensity by calendar month (holiday season brings more new visitors).
const MONTH_WEIGHTS: [f64; 12] = [0.9, 0.8, 0.9, 0.9, 1.0, 0.9, 1.0, 0.9, 1.0, 1.0, 1.4, 1.5];

/// When the person first visits: uniform over the period, thinned by month seasonality.
fn acquisition_time(rng: &mut ChaCha8Rng, start_ms: i64, end_ms: i64) -> i64 {
    let span = (end_ms - start_ms).max(0) as f64;
    let max_w = MONTH_WEIGHTS.iter().copied().fold(0.0, f64::max);
    let mut t = start_ms;
    for _ in 0..16 {
        t = start_ms + (unit(rng) * span) as i64;
        let (_, month, _) = civil_from_days(t.div_euclid(DAY_MS));
        if chance(rng, MONTH_WEIGHTS[(month as usize - 1) % 12] / max_w) {
            break;
        }
    }
    t
}

impl Person {
    pub(crate) fn generate(
        rng: &mut ChaCha8Rng,
        seed: u64,
        index: usize,
        catalog: &Catalog,
        start_ms: i64,
        end_ms: i64,
    ) -> Person {
        let hh = household(seed, index);
        let city = match &hh {
            Some(h) => h.city,
            None => pick_city(rng),
        };
        let locale = *pick_weighted(rng, locales(city.country_code));
        let (first, mut last) = names(rng, city.country_code);
        if let Some(h) = &hh {
            let mut hrng = ChaCha8Rng::seed_from_u64(h.last_seed);
            last = names(&mut hrng, city.country_code).1;
        }

        // Email: always contains the customer index so two people never share an address by accident.
        let (f, l) = (first.to_ascii_lowercase(), last.to_ascii_lowercase());
        let local = match rng.random_range(0..5u8) {
            0 => format!("{}{l}{index}", &f[..1]),
            1 | 2 => format!("{f}.{l}{index}"),
            3 => format!("{f}_{l}{index}"),
            _ => format!("{l}.{f}{index}"),
        };
        let domain = *pick_weighted(rng, &EMAIL_DOMAINS);
        let email = format!("{local}@{domain}");

        let salt = mix(seed, STREAM_PHONE, 0);
        let own_phone = if chance(rng, 0.1) { None } else { Some(phone_number(rng, city, index as u64, salt, false)) };
        let (street, postal, phone) = match hh {
            // Households list the shared landline (identity resolution must not merge on it).
            Some(h) => (h.street, h.postal, Some(h.phone)),
            None => (street(rng, city), fill_pattern(rng, city.postal), own_phone),
        };
        let birthday = if chance(rng, 0.75) {
            Some(format!(
                "{:04}-{:02}-{:02}",
                rng.random_range(1955..2007u16),
                rng.random_range(1..13u8),
                rng.random_range(1..29u8)
            ))
        } else {
            None
        };

        // Devices: 1–3, each with its own anonymousId.
        let n_devices = *pick_weighted(rng, &[(1usize, 0.5), (2, 0.35), (3, 0.15)]);
        let mut devices = Vec::with_capacity(n_devices);
        let first_kind = if chance(rng, 0.62) { DeviceKind::Mobile } else { DeviceKind::Desktop };
        devices.push(device(rng, first_kind, city, locale));
        if n_devices >= 2 {
            let kind = if chance(rng, 0.2) {
                DeviceKind::Tablet
            } else if first_kind == DeviceKind::Mobile {
                DeviceKind::Desktop
            } else {
                DeviceKind::Mobile
            };
            devices.push(device(rng, kind, city, locale));
        }
        if n_devices >= 3 {
            let kind = if chance(rng, 0.5) { DeviceKind::Tablet } else { DeviceKind::Desktop };
            devices.push(device(rng, kind, city, locale));
        }

        // Tastes: 1–3 favourite categories, weighted without replacement by category appeal.
        let n_fav = *pick_weighted(rng, &[(1usize, 0.4), (2, 0.4), (3, 0.2)]);
        let mut fav_cats: Vec<(usize, f64)> = Vec::with_capacity(n_fav);
        while fav_cats.len() < n_fav {
            let opts: Vec<(usize, f64)> = (0..CATEGORIES.len())
                .filter(|c| !fav_cats.iter().any(|(f, _)| f == c))
                .map(|c| (c, CATEGORY_APPEAL[c]))
                .collect();
            let c = *pick_weighted(rng, &opts);
            fav_cats.push((c, gamma(rng, 2.0, 1.0)));
        }
        let brand_of = |rng: &mut ChaCha8Rng, cat: usize| *pick(rng, CATEGORIES[cat].brands);
        let second = fav_cats[index_in(rng, fav_cats.len())].0;
        let fav_brands = [brand_of(rng, fav_cats[0].0), brand_of(rng, second)];

        let buyer = chance(rng, 0.6) && !catalog.info.is_empty();
        let staple_cat = fav_cats
            .iter()
            .map(|(c, _)| *c)
            .find(|&c| CATEGORIES[c].cycle_days.is_some())
            .filter(|_| buyer && chance(rng, 0.75));

        let acquired_ms = acquisition_time(rng, start_ms, end_ms);

        Person {
            user_id: format!("cust_{index}"),
            city,
            first,
            last,
            email,
            phone,
            birthday,
            street,
            postal,
            devices,
            fav_cats,
            fav_brands,
            price_tier: lognormal(rng, 1.0, 0.35),
            extra_items: gamma(rng, 1.5, 0.35),
            open_p: beta(rng, 1.2, 3.5),
            click_p: beta(rng, 1.0, 5.0),
            coupon_affinity: beta(rng, 1.0, 5.0),
            signup_p: beta(rng, 1.0, 4.0),
            buyer,
            lambda_per_day: gamma(rng, 0.75, 2.8).max(0.05) / 365.0,
            dropout_p: beta(rng, 1.4, 2.2),
            browse_per_day: gamma(rng, 1.5, 1.0 / 45.0),
            staple_cat,
            acquired_ms,
        }
    }

    /// The email as typed this time: mostly canonical, sometimes with capitals or stray whitespace.
    pub(crate) fn email_variant(&self, rng: &mut ChaCha8Rng) -> String {
        let r = unit(rng);
        if r < 0.84 {
            self.email.clone()
        } else if r < 0.92 {
            // Capitalised words: "Haruto.Sato12@Example.com".
            let mut out = String::with_capacity(self.email.len());
            let mut upper_next = true;
            for c in self.email.chars() {
                out.push(if upper_next { c.to_ascii_uppercase() } else { c });
                upper_next = matches!(c, '.' | '_' | '@');
            }
            out
        } else if r < 0.96 {
            self.email.to_ascii_uppercase()
        } else {
            format!(" {} ", self.email)
        }
    }

    /// The phone as typed this time.
    pub(crate) fn phone_variant(&self, rng: &mut ChaCha8Rng) -> Option<String> {
        let p = self.phone.as_ref()?;
        let national = if chance(rng, 0.85) { p.prefers_national } else { !p.prefers_national };
        Some(if national { p.national.clone() } else { p.e164.clone() })
    }

    /// Favourite category most of the time, any category sometimes.
    pub(crate) fn category(&self, rng: &mut ChaCha8Rng) -> usize {
        if chance(rng, 0.85) { *pick_weighted(rng, &self.fav_cats) } else { index_in(rng, CATEGORIES.len()) }
    }
}
