//! A deterministic simulated D2C store: a product catalog plus the Segment tracking messages its customers'
//! browsers (and the store backend) would send over a period of time.
//!
//! The output feeds the demo, scale tests, benchmarks and — later — customer-lifetime-value models, so the
//! generative model aims for the statistical shape of a real store rather than uniform noise.
//!
//! # Usage
//!
//! ```
//! use kizuna_simulate::{SimConfig, Simulator};
//!
//! let sim = Simulator::new(SimConfig { customers: 50, ..SimConfig::default() });
//! assert_eq!(sim.products().len(), 300);
//! for msg in sim.messages() {
//!     assert!(msg["messageId"].is_string());
//! }
//! ```
//!
//! # Determinism
//!
//! Everything is a pure function of [`SimConfig`]. The catalog comes from its own RNG stream; customer
//! `i` uses a `ChaCha8Rng` seeded with a SplitMix64 mix of `(seed, i)` and nothing else, so customers can be
//! generated lazily, in parallel, or one at a time ([`Simulator::customer_messages`]) with byte-identical
//! results. The only cross-customer coupling is the *household* stream keyed by `(seed, i / 2)` (see below),
//! which is itself a pure function of the index.
//!
//! # Catalog
//!
//! `products` items are dealt round-robin over eight categories (Apparel, Shoes, Accessories, Skincare,
//! Home, Coffee, Bags, Outdoor), each with 4–5 sub-categories and 3–4 of the 20 fictional brands. Prices are
//! log-normal around a per-category median times a sub-category multiplier, converted to the configured
//! currency and rounded to shelf prices (`24.99`, `3,980` yen). About 18% carry a `compare_at_price` (tag
//! `sale`), ~5% are out of stock (viewable, never added to a cart), popularity is log-normal (heavy-tailed
//! bestsellers). `created_at`: 60% predate the period, 30% appear during it, 10% are "new arrivals" in its last
//! tenth; nobody sees a product before it exists. Coffee (30-day cycle) and Skincare (60-day cycle) are
//! consumables that drive replenishment purchases.
//!
//! # People
//!
//! Each customer is one person with a home city (≈55% Japan, ≈35% US, ≈10% elsewhere) that fixes locale,
//! IANA timezone, `context.location`, address, phone style and the local hours their sessions happen in.
//!
//! * **Purchase process (BG/NBD spirit).** ~40% of people only ever browse. The rest are buyers with a
//!   personal purchase rate λ ~ Gamma(0.75, 2.8) per year and a dropout probability p ~ Beta(1.4, 2.2):
//!   after each purchase they become inactive with probability p (×0.6 for replenishers), otherwise the next
//!   purchase comes after an Exp(λ) gap. People are acquired over the whole period (uniform, with a
//!   November/December bump), so late arrivals are right-censored exactly as in real data. Result: many one-time buyers, a minority of loyal repeaters.
//! * **Replenishment.** Buyers whose favourites include a consumable usually have a "staple" category: their
//!   first order contains one, and later orders are mostly timed by the category cycle (log-normal jitter)
//!   and re-buy the same product(s).
//! * **Spend (gamma-gamma spirit).** A per-person price tier (log-normal) steers which products they pick
//!   relative to the category median, and a per-person Gamma mean sets how many extra items an order has.
//! * **Tastes.** 1–3 favourite categories (85% of views) and two favourite brands (preferred when choosing).
//! * **Browsing.** Between purchases, alive buyers browse at a personal Poisson rate; lapsed buyers browse a
//!   little; non-buyers have 1–few sessions. Browse sessions add to carts ~12% per product view and abandon
//!   them; some start a checkout and abandon it.
//!
//! # Identity
//!
//! Each person has 1–3 devices, each with its own `anonymousId` (UUID-shaped). Browsing is anonymous; the
//! person becomes known (`identify` with `userId = "cust_<index>"`) when they check out (email entered), log
//! in, or sign up. analytics.js then sends `userId` on every later message from *that device*. On another
//! device the person starts anonymous again until they log in or check out, which produces the
//! same-userId-on-several-anonymousIds pattern identity resolution stitches. Traits carry email (sometimes
//! with capitals or surrounding whitespace), phone (Japanese national `090-1234-5678` or E.164 `+8190…`, US
//! `(212) 345-6789` or `+1…`, typed differently on different occasions; ~10% none; synthetic numbers unique
//! per person), names, birthday (`YYYY-MM-DD`, ~75%), and
//! `address {street, city, state, postal_code, country}` with ISO country codes. About 4% of adjacent index
//! pairs `(2k, 2k+1)` form a household sharing surname, address and a landline phone — two people, one phone,
//! who must *not* be merged. Emails always contain the customer index, so they never collide by accident.
//! All domains are reserved example domains, IPs are documentation ranges.
//!
//! # Messages
//!
//! Segment HTTP tracking API messages: `type`, `messageId` (`sim-<seed>-<customer>-<n>`), `anonymousId`,
//! `userId` (once known), `timestamp` (RFC 3339, ms, UTC), `context` (ip, userAgent, locale, timezone,
//! location, library, `campaign` on some session starts, `page` on page calls). Events follow the Segment
//! e-commerce v2 spec: Products Searched, Product List Viewed, Product Viewed, Product Added/Removed, Cart
//! Viewed, Checkout Started, Coupon Applied, Order Completed, plus `page` calls for storefront pages.
//! Money is computed in integer minor units: `revenue = subtotal − discount` and
//! `total = revenue + shipping + tax`, with `subtotal = Σ price × quantity`.
//!
//! Server-side messages — `Order Refunded` (~5% of orders, 2–14 days later, sometimes partial) and
//! `Email Opened` / `Email Link Clicked` for the store newsletter (every 10 days, to identified people) —
//! carry only `userId` (no `anonymousId`) and `context.library.name = "analytics-node"`, with the rest of the
//! context copied from the person's last used device. Email clicks start a session with a newsletter
//! campaign.
//!
//! Per customer, messages are sorted by timestamp; all timestamps lie in `[start, start + days)`.

mod catalog;
mod customer;
mod data;
mod dist;
mod person;
#[cfg(test)]
mod tests;

use chrono::{DateTime, Utc};
use kizuna_catalog::Product;
use serde_json::Value;

use crate::catalog::{Catalog, DAY_MS};

/// What to simulate.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    pub seed: u64,
    /// Number of people.
    pub customers: usize,
    /// Start of the simulated period.
    pub start: DateTime<Utc>,
    /// Length of the simulated period.
    pub days: u32,
    /// Catalog size.
    pub products: usize,
    /// ISO 4217 code for all prices (e.g. "USD", "JPY"; zero-decimal currencies get whole prices).
    pub currency: String,
}

impl Default for SimConfig {
    /// Seed 42, 2000 customers, 2025-01-01 for 365 days, 300 products, USD.
    fn default() -> Self {
        SimConfig {
            seed: 42,
            customers: 2000,
            start: DateTime::from_timestamp(1_735_689_600, 0).unwrap_or(DateTime::UNIX_EPOCH),
            days: 365,
            products: 300,
            currency: "USD".to_owned(),
        }
    }
}

/// A newsletter send, shared by all customers.
pub(crate) struct EmailCampaign {
    pub send_ms: i64,
    pub id: String,
    pub name: String,
    pub subject: &'static str,
    pub cat: usize,
}

/// The simulated store. Cheap to share across threads (`&Simulator` is `Sync`).
pub struct Simulator {
    cfg: SimConfig,
    catalog: Catalog,
    start_ms: i64,
    end_ms: i64,
    emails: Vec<EmailCampaign>,
}

impl Simulator {
    pub fn new(cfg: SimConfig) -> Simulator {
        let start_ms = cfg.start.timestamp_millis();
        let end_ms = start_ms + i64::from(cfg.days) * DAY_MS;
        let catalog = Catalog::build(cfg.seed, cfg.products, &cfg.currency, start_ms, end_ms);
        let mut emails = Vec::new();
        // Newsletter every 10 days at 01:00 UTC (10:00 in Tokyo), starting on day 2.
        let first = start_ms.div_euclid(DAY_MS) * DAY_MS + 2 * DAY_MS + 3_600_000;
        let mut send_ms = first;
        let mut k = 0usize;
        while send_ms < end_ms {
            let date = customer::rfc3339_ms(send_ms);
            let ymd = date.get(..10).unwrap_or("").replace('-', "");
            emails.push(EmailCampaign {
                send_ms,
                id: format!("nl_{:03}", k + 1),
                name: format!("newsletter_{ymd}"),
                subject: data::EMAIL_SUBJECTS[k % data::EMAIL_SUBJECTS.len()],
                cat: k % data::CATEGORIES.len(),
            });
            k += 1;
            send_ms += 10 * DAY_MS;
        }
        Simulator { cfg, catalog, start_ms, end_ms, emails }
    }

    /// The configuration this simulator was built from.
    pub fn config(&self) -> &SimConfig {
        &self.cfg
    }

    /// The catalog (all prices in `cfg.currency`).
    pub fn products(&self) -> &[Product] {
        &self.catalog.products
    }

    /// The `userId` customer `index` gets once identified (`cust_<index>`).
    pub fn user_id(index: usize) -> String {
        format!("cust_{index}")
    }

    /// All messages of customer `index` (0..cfg.customers), in time order. Deterministic from (seed, index)
    /// alone, so customers can be generated in parallel or lazily.
    pub fn customer_messages(&self, index: usize) -> Vec<Value> {
        customer::customer_messages(self, index)
    }

    /// Every customer's messages, customer after customer (lazy; does not materialise everything).
    pub fn messages(&self) -> impl Iterator<Item = Value> + '_ {
        (0..self.cfg.customers).flat_map(move |i| self.customer_messages(i))
    }
}
