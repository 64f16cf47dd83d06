//! Plays one person's life as a stream of Segment messages.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::{Map, Value};

use crate::Simulator;
use crate::catalog::{Catalog, Currency, DAY_MS, STORE_URL};
use crate::data::{CAMPAIGNS, CATEGORIES, DeviceKind, NODE_LIBRARY_VERSION};
use crate::dist::{chance, exponential, index, lognormal, mix, pick, poisson, uniform, unit};
use crate::person::Person;

const STREAM_CUSTOMER: u64 = 0xC057_0001;
const HOUR_MS: i64 = 3_600_000;
const MIN_MS: i64 = 60_000;
const STORE_NAME: &str = "Shop Example";
/// Orders at or above this (USD-equivalent, after discount) ship free.
const FREE_SHIPPING_USD: f64 = 75.0;
const SHIPPING_USD: f64 = 6.95;
const REFUND_RATE: f64 = 0.05;

/// Relative likelihood of a session starting at each local hour.
const HOUR_WEIGHTS: [f64; 24] = [
    0.35, 0.2, 0.1, 0.05, 0.05, 0.1, 0.3, 0.7, 1.0, 1.0, 1.0, 1.1, 1.4, 1.2, 1.0, 1.0, 1.1, 1.2, 1.4, 1.7, 2.0, 2.1,
    1.8, 1.0,
];

#[derive(Clone, Copy, Debug)]
enum Plan {
    Browse,
    Purchase { replenish: bool },
}

#[derive(Clone, Copy)]
enum Landing {
    Default,
    Collection(usize),
}

#[derive(Clone, Copy, PartialEq)]
enum Traits {
    Signup,
    Checkout,
    Full,
}

#[derive(Clone, Copy)]
enum Add {
    Maybe(f64),
    Always,
}

struct Gen<'a> {
    sim: &'a Simulator,
    cat: &'a Catalog,
    cur: Currency,
    currency: Value,
    index: usize,
    rng: ChaCha8Rng,
    p: Person,
    out: Vec<(i64, Value)>,
    now: i64,
    end: i64,
    // Identity state.
    dev: usize,
    last_dev: usize,
    dev_identified: Vec<bool>,
    identified_at: Option<i64>,
    // Session state.
    ctx: Map<String, Value>,
    campaign: Option<Value>,
    referrer: String,
    cart: Vec<(usize, u32)>,
    cart_id: Option<String>,
    // Counters and memory.
    n_carts: u32,
    n_checkouts: u32,
    n_orders: u32,
    staples: Vec<usize>,
    next_email: usize,
}

#[inline]
fn put(m: &mut Map<String, Value>, k: &str, v: impl Into<Value>) {
    m.insert(k.to_owned(), v.into());
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
pub(crate) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// `2025-01-02T03:04:05.678Z`, the format analytics.js uses.
pub(crate) fn rfc3339_ms(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let milli = ms.rem_euclid(1000);
    let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400);
    format!("{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{milli:03}Z", sod / 3600, sod % 3600 / 60, sod % 60)
}

pub(crate) fn customer_messages(sim: &Simulator, index: usize) -> Vec<Value> {
    let mut rng = ChaCha8Rng::seed_from_u64(mix(sim.cfg.seed, STREAM_CUSTOMER, index as u64));
    let p = Person::generate(&mut rng, sim.cfg.seed, index, &sim.catalog, sim.start_ms, sim.end_ms);
    let n_dev = p.devices.len();
    let next_email = sim.emails.partition_point(|e| e.send_ms < p.acquired_ms);
    let g = Gen {
        sim,
        cat: &sim.catalog,
        cur: sim.catalog.currency,
        currency: Value::from(sim.cfg.currency.as_str()),
        index,
        rng,
        now: p.acquired_ms,
        p,
        out: Vec::with_capacity(64),
        end: sim.end_ms,
        dev: 0,
        last_dev: 0,
        dev_identified: vec![false; n_dev],
        identified_at: None,
        ctx: Map::new(),
        campaign: None,
        referrer: String::new(),
        cart: Vec::new(),
        cart_id: None,
        n_carts: 0,
        n_checkouts: 0,
        n_orders: 0,
        staples: Vec::new(),
        next_email,
    };
    g.run()
}

impl<'a> Gen<'a> {
    fn run(mut self) -> Vec<Value> {
        let plan = self.plan();
        for (t, kind) in plan {
            self.emails_until(t);
            if t >= self.end {
                break;
            }
            let t = self.local_time(t);
            self.session(t, kind, None, Landing::Default);
        }
        self.emails_until(self.end);

        self.out.sort_by_key(|(t, _)| *t);
        let seed = self.sim.cfg.seed;
        let index = self.index;
        self.out
            .into_iter()
            .enumerate()
            .map(|(n, (_, mut v))| {
                if let Value::Object(m) = &mut v {
                    m.insert("messageId".to_owned(), Value::String(format!("sim-{seed}-{index}-{n}")));
                }
                v
            })
            .collect()
    }

    // ------------------------------------------------------------------ lifecycle

    /// The person's sessions over the period (BG/NBD-style purchase process plus browsing).
    fn plan(&mut self) -> Vec<(i64, Plan)> {
        let rng = &mut self.rng;
        let p = &self.p;
        let end = self.end;
        let day = DAY_MS as f64;
        let ms = |days: f64| (days * day) as i64;
        let mut plan = Vec::new();
        let mut t = p.acquired_ms;

        if !p.buyer {
            let n = 1 + poisson(rng, 1.3);
            for _ in 0..n {
                if t >= end {
                    break;
                }
                plan.push((t, Plan::Browse));
                t += ms(exponential(rng, 14.0)) + 10 * MIN_MS;
            }
            return plan;
        }

        // Buyers: about half buy in their first session, the rest research first.
        if !chance(rng, 0.45) {
            plan.push((t, Plan::Browse));
            if chance(rng, 0.35) {
                t += ms(exponential(rng, 2.0)) + 10 * MIN_MS;
                plan.push((t, Plan::Browse));
            }
            t += ms(exponential(rng, 4.0)) + HOUR_MS;
        }
        let cycle = p.staple_cat.and_then(|c| CATEGORIES[c].cycle_days);
        let mut replenish = false;
        while t < end {
            plan.push((t, Plan::Purchase { replenish }));
            let dropout = if cycle.is_some() { p.dropout_p * 0.6 } else { p.dropout_p };
            if chance(rng, dropout) {
                // Lapsed: a little residual browsing, never another purchase.
                for _ in 0..poisson(rng, 0.6) {
                    let tb = t + ms(exponential(rng, 45.0));
                    if tb < end {
                        plan.push((tb, Plan::Browse));
                    }
                }
                break;
            }
            let (gap, rep) = match cycle {
                Some(c) if chance(rng, 0.6) => (c * lognormal(rng, 1.0, 0.25), true),
                _ => (exponential(rng, 1.0 / p.lambda_per_day), false),
            };
            let next = t + ms(gap.max(0.5));
            let span_end = next.min(end);
            let n_browse = poisson(rng, p.browse_per_day * (span_end - t) as f64 / day).min(5);
            for _ in 0..n_browse {
                plan.push((t + (unit(rng) * (span_end - t) as f64) as i64, Plan::Browse));
            }
            if chance(rng, 0.3) {
                let tb = next - ms(uniform(rng, 0.1, 2.0));
                if tb > t {
                    plan.push((tb, Plan::Browse));
                }
            }
            replenish = rep;
            t = next;
        }
        plan.sort_by_key(|(t, _)| *t);
        plan
    }

    /// Moves a planned instant to a plausible local hour of the same local day.
    fn local_time(&mut self, t: i64) -> i64 {
        let off = self.p.city.offset_min * MIN_MS;
        let local_day = (t + off).div_euclid(DAY_MS) * DAY_MS;
        let total: f64 = HOUR_WEIGHTS.iter().sum();
        let mut x = unit(&mut self.rng) * total;
        let mut hour = 23;
        for (h, w) in HOUR_WEIGHTS.iter().enumerate() {
            if x < *w {
                hour = h as i64;
                break;
            }
            x -= *w;
        }
        let within = (unit(&mut self.rng) * HOUR_MS as f64) as i64;
        (local_day + hour * HOUR_MS + within - off).max(self.sim.start_ms)
    }

    fn emails_until(&mut self, until: i64) {
        let sim = self.sim;
        let emails = &sim.emails;
        while let Some(e) = emails.get(self.next_email) {
            if e.send_ms >= until {
                break;
            }
            self.next_email += 1;
            if self.identified_at.is_none_or(|t| t > e.send_ms) || !chance(&mut self.rng, self.p.open_p) {
                continue;
            }
            let open = (e.send_ms + (exponential(&mut self.rng, 5.0) * HOUR_MS as f64) as i64).max(self.now + MIN_MS);
            if open >= self.end {
                continue;
            }
            self.now = open;
            let mut props = Map::new();
            put(&mut props, "email_id", format!("em_{}_{:06}", e.id, self.index));
            put(&mut props, "email_subject", e.subject);
            put(&mut props, "campaign_id", e.id.as_str());
            put(&mut props, "campaign_name", e.name.as_str());
            let mut click_props = props.clone();
            self.server_track(self.now, "Email Opened", props);
            if chance(&mut self.rng, self.p.click_p) {
                self.pause(5.0, 180.0);
                let handle = CATEGORIES[e.cat].handle;
                let search = format!("?utm_source=newsletter&utm_medium=email&utm_campaign={}", e.name);
                put(&mut click_props, "link_url", format!("{STORE_URL}/collections/{handle}{search}"));
                self.server_track(self.now, "Email Link Clicked", click_props);
                let mut campaign = Map::new();
                put(&mut campaign, "source", "newsletter");
                put(&mut campaign, "medium", "email");
                put(&mut campaign, "name", e.name.as_str());
                let t = self.now + 5_000;
                self.session(t, Plan::Browse, Some(Value::Object(campaign)), Landing::Collection(e.cat));
            }
        }
    }

    // ------------------------------------------------------------------ message plumbing

    fn pause(&mut self, lo_s: f64, hi_s: f64) {
        self.now += (uniform(&mut self.rng, lo_s, hi_s) * 1000.0) as i64;
    }

    /// A browser message skeleton from the current device, or `None` once the period is over.
    fn base(&mut self, kind: &'static str, page: Option<Value>) -> Option<Map<String, Value>> {
        if self.now >= self.end {
            return None;
        }
        let mut m = Map::new();
        put(&mut m, "type", kind);
        put(&mut m, "anonymousId", self.p.devices[self.dev].anonymous_id.as_str());
        if self.dev_identified[self.dev] {
            put(&mut m, "userId", self.p.user_id.as_str());
        }
        put(&mut m, "timestamp", rfc3339_ms(self.now));
        let mut ctx = self.ctx.clone();
        if let Some(c) = self.campaign.take() {
            ctx.insert("campaign".to_owned(), c);
        }
        if let Some(pg) = page {
            ctx.insert("page".to_owned(), pg);
        }
        m.insert("context".to_owned(), Value::Object(ctx));
        Some(m)
    }

    fn track(&mut self, event: &'static str, props: Map<String, Value>) {
        if let Some(mut m) = self.base("track", None) {
            put(&mut m, "event", event);
            m.insert("properties".to_owned(), Value::Object(props));
            self.out.push((self.now, Value::Object(m)));
        }
    }

    /// A server-side (analytics-node) track with only `userId`, e.g. refunds and email engagement.
    fn server_track(&mut self, at: i64, event: &'static str, props: Map<String, Value>) {
        if at >= self.end {
            return;
        }
        let mut ctx = self.p.devices[self.last_dev].context.clone();
        let mut library = Map::new();
        put(&mut library, "name", "analytics-node");
        put(&mut library, "version", NODE_LIBRARY_VERSION);
        ctx.insert("library".to_owned(), Value::Object(library));
        let mut m = Map::new();
        put(&mut m, "type", "track");
        put(&mut m, "userId", self.p.user_id.as_str());
        put(&mut m, "timestamp", rfc3339_ms(at));
        m.insert("context".to_owned(), Value::Object(ctx));
        put(&mut m, "event", event);
        m.insert("properties".to_owned(), Value::Object(props));
        self.out.push((at, Value::Object(m)));
    }

    fn page(&mut self, name: &'static str, path: &str, search: &str, title: &str) {
        self.pause(4.0, 90.0);
        let url = format!("{STORE_URL}{path}{search}");
        let mut props = Map::new();
        put(&mut props, "path", path);
        put(&mut props, "referrer", self.referrer.as_str());
        put(&mut props, "search", search);
        put(&mut props, "title", title);
        put(&mut props, "url", url.as_str());
        if let Some(mut m) = self.base("page", Some(Value::Object(props.clone()))) {
            put(&mut m, "name", name);
            m.insert("properties".to_owned(), Value::Object(props));
            self.out.push((self.now, Value::Object(m)));
        }
        self.referrer = url;
        self.pause(0.2, 2.0);
    }

    fn identify(&mut self, kind: Traits) {
        self.dev_identified[self.dev] = true;
        if self.identified_at.is_none() {
            self.identified_at = Some(self.now);
        }
        let Some(mut m) = self.base("identify", None) else { return };
        put(&mut m, "userId", self.p.user_id.as_str());
        let rng = &mut self.rng;
        let p = &self.p;
        let mut traits = Map::new();
        put(&mut traits, "email", p.email_variant(rng));
        if kind == Traits::Signup {
            if chance(rng, 0.5) {
                put(&mut traits, "first_name", p.first);
            }
        } else {
            put(&mut traits, "first_name", p.first);
            put(&mut traits, "last_name", p.last);
            if let Some(phone) = p.phone_variant(rng) {
                put(&mut traits, "phone", phone);
            }
            let mut address = Map::new();
            put(&mut address, "street", p.street.as_str());
            put(&mut address, "city", p.city.city);
            put(&mut address, "state", p.city.region);
            put(&mut address, "postal_code", p.postal.as_str());
            put(&mut address, "country", p.city.country_code);
            traits.insert("address".to_owned(), Value::Object(address));
            if kind == Traits::Full
                && let Some(b) = &p.birthday
            {
                put(&mut traits, "birthday", b.as_str());
            }
        }
        m.insert("traits".to_owned(), Value::Object(traits));
        self.out.push((self.now, Value::Object(m)));
        self.pause(0.5, 3.0);
    }

    // ------------------------------------------------------------------ sessions

    fn session(&mut self, t: i64, plan: Plan, campaign: Option<Value>, landing: Landing) {
        let gap = (uniform(&mut self.rng, 15.0, 180.0) * MIN_MS as f64) as i64;
        self.now = t.max(self.now + gap);
        if self.now >= self.end {
            return;
        }
        let n_dev = self.p.devices.len();
        self.dev = if n_dev == 1 || chance(&mut self.rng, 0.6) { 0 } else { 1 + index(&mut self.rng, n_dev - 1) };
        self.last_dev = self.dev;
        let device = &self.p.devices[self.dev];
        self.ctx = device.context.clone();
        if device.kind == DeviceKind::Mobile && chance(&mut self.rng, 0.5) {
            let ip = format!("{}{}", device.ip_prefix, 1 + index(&mut self.rng, 254));
            put(&mut self.ctx, "ip", ip);
        }
        self.referrer.clear();
        self.campaign = None;
        if let Some(c) = campaign {
            self.campaign = Some(c);
        } else if chance(&mut self.rng, 0.35) {
            let (source, medium, name, referrer) = *pick(&mut self.rng, &CAMPAIGNS);
            self.referrer.push_str(referrer);
            if !name.is_empty() {
                let mut c = Map::new();
                put(&mut c, "source", source);
                put(&mut c, "medium", medium);
                put(&mut c, "name", name);
                self.campaign = Some(Value::Object(c));
            }
        }
        self.cart.clear();
        self.cart_id = None;

        // Email links carry their UTM parameters in the landing URL.
        let utm = match landing {
            Landing::Collection(_) => self
                .campaign
                .as_ref()
                .and_then(|c| c.get("name"))
                .and_then(Value::as_str)
                .map(|n| format!("?utm_source=newsletter&utm_medium=email&utm_campaign={n}")),
            Landing::Default => None,
        };

        // Returning customer on a device the store does not know yet: sometimes logs in right away.
        if self.identified_at.is_some() && !self.dev_identified[self.dev] && chance(&mut self.rng, 0.35) {
            self.page("Login", "/account/login", "", &format!("Log in | {STORE_NAME}"));
            self.identify(Traits::Full);
        }

        match landing {
            Landing::Collection(c) => self.view_collection(c, utm.as_deref().unwrap_or("")),
            Landing::Default => {
                if self.campaign.is_some() && chance(&mut self.rng, 0.5) {
                    if let Some(pid) = self.any_product() {
                        self.view_product(pid, Add::Maybe(0.1));
                    }
                } else if chance(&mut self.rng, 0.55) {
                    self.page("Home", "/", "", STORE_NAME);
                } else {
                    let c = self.p.category(&mut self.rng);
                    self.view_collection(c, "");
                }
            }
        }

        match plan {
            Plan::Browse => self.browse_session(),
            Plan::Purchase { replenish } => self.purchase_session(replenish),
        }
    }

    fn browse_session(&mut self) {
        let steps = 1 + poisson(&mut self.rng, 2.0);
        for _ in 0..steps {
            self.browse_step(0.12);
        }
        if !self.cart.is_empty() {
            if chance(&mut self.rng, 0.5) {
                self.view_cart();
            }
            if chance(&mut self.rng, 0.45) {
                self.checkout(false);
            }
        }
        if !self.p.buyer && self.identified_at.is_none() && chance(&mut self.rng, self.p.signup_p * 0.6) {
            self.page("Create Account", "/account/register", "", &format!("Create account | {STORE_NAME}"));
            self.identify(Traits::Signup);
        }
    }

    fn purchase_session(&mut self, replenish: bool) {
        let target = (1 + poisson(&mut self.rng, self.p.extra_items) as usize).min(6);
        if replenish && !self.staples.is_empty() {
            let n = if self.staples.len() > 1 && chance(&mut self.rng, 0.3) { 2 } else { 1 };
            for k in 0..n {
                let pid = self.staples[k];
                self.view_product(pid, Add::Always);
            }
        } else if self.n_orders == 0
            && let Some(c) = self.p.staple_cat
            && let Some(pid) = self.choose_product(c)
        {
            self.view_product(pid, Add::Always);
        }
        for _ in 0..poisson(&mut self.rng, 1.5) {
            let add_p = if self.cart.len() < target { 0.35 } else { 0.04 };
            self.browse_step(add_p);
        }
        let mut tries = 0;
        while self.cart.len() < target && tries < 8 {
            tries += 1;
            if let Some(pid) = self.any_product() {
                self.view_product(pid, Add::Always);
            }
        }
        if self.cart.is_empty() {
            return;
        }
        if self.cart.len() >= 2 && chance(&mut self.rng, 0.1) {
            self.remove_item();
        }
        if chance(&mut self.rng, 0.6) {
            self.view_cart();
        }
        if chance(&mut self.rng, 0.12) {
            // Interrupted: abandons the checkout, comes back to the same cart a little later.
            self.checkout(false);
            self.pause(600.0, 4.0 * 3600.0);
            self.view_cart();
        }
        self.checkout(true);
    }

    fn browse_step(&mut self, add_p: f64) {
        let r = unit(&mut self.rng);
        if r < 0.2 {
            let c = self.p.category(&mut self.rng);
            self.view_collection(c, "");
        } else if r < 0.3 {
            self.search();
        } else if r < 0.36 && !self.cart.is_empty() {
            self.view_cart();
        } else if r < 0.4 && !self.cart.is_empty() {
            self.remove_item();
        } else if let Some(pid) = self.any_product() {
            self.view_product(pid, Add::Maybe(add_p));
        }
    }

    // ------------------------------------------------------------------ product choice

    /// A product of `cat` available now: popular ones more often, near this person's price level and
    /// favourite brands.
    fn choose_product(&mut self, cat: usize) -> Option<usize> {
        let catalog = self.cat;
        let target = catalog.cats.get(cat)?.median_minor * self.p.price_tier;
        let mut best = None;
        let mut best_score = f64::MAX;
        for _ in 0..2 {
            let Some(pid) = catalog.pick_in(&mut self.rng, cat, self.now) else { break };
            let info = &catalog.info[pid];
            let mut score = (info.price_minor as f64 / target).ln().abs();
            if self.p.fav_brands.contains(&info.brand) {
                score -= 0.5;
            }
            if score < best_score {
                best = Some(pid);
                best_score = score;
            }
        }
        best
    }

    fn any_product(&mut self) -> Option<usize> {
        let c = self.p.category(&mut self.rng);
        (0..CATEGORIES.len()).find_map(|k| self.choose_product((c + k) % CATEGORIES.len()))
    }

    fn quantity(&mut self, pid: usize) -> u32 {
        let consumable = CATEGORIES[self.cat.info[pid].cat].cycle_days.is_some();
        let r = unit(&mut self.rng);
        match (consumable, r) {
            (true, r) if r < 0.6 => 1,
            (true, r) if r < 0.9 => 2,
            (true, _) => 3,
            (false, r) if r < 0.92 => 1,
            (false, _) => 2,
        }
    }

    // ------------------------------------------------------------------ storefront actions

    fn item(&self, pid: usize) -> Map<String, Value> {
        self.cat.info[pid].item.clone()
    }

    fn cart_products(&self) -> Vec<Value> {
        self.cart
            .iter()
            .map(|&(pid, qty)| {
                let mut it = self.item(pid);
                put(&mut it, "quantity", qty);
                Value::Object(it)
            })
            .collect()
    }

    fn list_products(&mut self, cat: usize) -> Vec<Value> {
        let n = 4 + index(&mut self.rng, 5);
        let mut picked: Vec<usize> = Vec::with_capacity(n);
        for _ in 0..n * 2 {
            if picked.len() >= n {
                break;
            }
            match self.cat.pick_in(&mut self.rng, cat, self.now) {
                Some(pid) if !picked.contains(&pid) => picked.push(pid),
                Some(_) => {}
                None => break,
            }
        }
        picked
            .iter()
            .enumerate()
            .map(|(i, &pid)| {
                let mut it = self.item(pid);
                put(&mut it, "position", i + 1);
                Value::Object(it)
            })
            .collect()
    }

    fn view_collection(&mut self, cat: usize, search: &str) {
        let def = &CATEGORIES[cat];
        let path = format!("/collections/{}", def.handle);
        self.page("Collection", &path, search, &format!("{} | {STORE_NAME}", def.name));
        let products = self.list_products(cat);
        let mut props = Map::new();
        put(&mut props, "list_id", def.handle);
        put(&mut props, "category", def.name);
        put(&mut props, "products", products);
        self.track("Product List Viewed", props);
    }

    fn search(&mut self) {
        let cat = self.p.category(&mut self.rng);
        let mut query = pick(&mut self.rng, &self.cat.cats[cat].queries).clone();
        if query.len() > 4 && chance(&mut self.rng, 0.05) {
            // A typo.
            let at = 1 + index(&mut self.rng, query.len() - 2);
            if query.is_char_boundary(at) && query.is_char_boundary(at + 1) {
                query.remove(at);
            }
        }
        let mut props = Map::new();
        put(&mut props, "query", query.as_str());
        self.track("Products Searched", props);
        let search = format!("?q={}", query.replace(' ', "+"));
        self.page("Search", "/search", &search, &format!("Search: {query} | {STORE_NAME}"));
        if chance(&mut self.rng, 0.7) {
            let products = self.list_products(cat);
            let mut props = Map::new();
            put(&mut props, "list_id", "search_results");
            put(&mut props, "category", CATEGORIES[cat].name);
            put(&mut props, "products", products);
            self.track("Product List Viewed", props);
        }
        if chance(&mut self.rng, 0.6)
            && let Some(pid) = self.choose_product(cat)
        {
            self.view_product(pid, Add::Maybe(0.1));
        }
    }

    fn view_product(&mut self, pid: usize, add: Add) {
        let catalog = self.cat;
        let info = &catalog.info[pid];
        let title = format!("{} | {STORE_NAME}", info.title);
        self.page("Product", &info.path, "", &title);
        let mut props = self.item(pid);
        put(&mut props, "currency", self.currency.clone());
        put(&mut props, "url", info.url.as_str());
        put(&mut props, "image_url", info.image.as_str());
        self.track("Product Viewed", props);
        let add = match add {
            Add::Always => true,
            Add::Maybe(p) => chance(&mut self.rng, p),
        };
        if add && info.in_stock {
            self.pause(5.0, 60.0);
            let qty = self.quantity(pid);
            self.add_to_cart(pid, qty);
        }
    }

    fn ensure_cart_id(&mut self) -> String {
        if let Some(id) = &self.cart_id {
            return id.clone();
        }
        self.n_carts += 1;
        let id = format!("cart_{:06}_{:02}", self.index, self.n_carts);
        self.cart_id = Some(id.clone());
        id
    }

    fn cart_line_props(&mut self, pid: usize, qty: u32) -> Map<String, Value> {
        let cart_id = self.ensure_cart_id();
        let mut props = self.item(pid);
        put(&mut props, "cart_id", cart_id);
        put(&mut props, "quantity", qty);
        put(&mut props, "currency", self.currency.clone());
        props
    }

    fn add_to_cart(&mut self, pid: usize, qty: u32) {
        let props = self.cart_line_props(pid, qty);
        self.track("Product Added", props);
        match self.cart.iter_mut().find(|(p, _)| *p == pid) {
            Some(line) => line.1 += qty,
            None => self.cart.push((pid, qty)),
        }
    }

    fn remove_item(&mut self) {
        if self.cart.is_empty() {
            return;
        }
        self.pause(3.0, 30.0);
        let i = index(&mut self.rng, self.cart.len());
        let (pid, qty) = self.cart.remove(i);
        let props = self.cart_line_props(pid, qty);
        self.track("Product Removed", props);
    }

    fn view_cart(&mut self) {
        self.page("Cart", "/cart", "", &format!("Your cart | {STORE_NAME}"));
        let cart_id = self.ensure_cart_id();
        let mut props = Map::new();
        put(&mut props, "cart_id", cart_id);
        put(&mut props, "products", self.cart_products());
        self.track("Cart Viewed", props);
    }

    /// Coupon for this order, if any: (code, percent off, free shipping).
    fn coupon(&mut self) -> Option<(&'static str, i64, bool)> {
        if self.n_orders == 0 && chance(&mut self.rng, 0.3) {
            return Some(("WELCOME10", 10, false));
        }
        if !chance(&mut self.rng, self.p.coupon_affinity) {
            return None;
        }
        if chance(&mut self.rng, 0.2) {
            return Some(("FREESHIP", 0, true));
        }
        let (_, month, _) = civil_from_days(self.now.div_euclid(DAY_MS));
        Some(match month {
            1 => ("NEWYEAR15", 15, false),
            2..=4 => ("SPRING10", 10, false),
            5..=8 => ("SUMMER15", 15, false),
            9 | 10 => ("AUTUMN10", 10, false),
            11 => ("BLACKFRIDAY20", 20, false),
            _ => ("HOLIDAY15", 15, false),
        })
    }

    fn checkout(&mut self, complete: bool) {
        let cart_id = self.ensure_cart_id();
        self.n_checkouts += 1;
        let order_id = format!("ord_{:06}_{:02}", self.index, self.n_checkouts);
        let checkout_id = format!("chk_{:06}_{:02}", self.index, self.n_checkouts);
        let path = format!("/checkouts/{checkout_id}");
        self.page("Checkout", &path, "", &format!("Checkout | {STORE_NAME}"));

        let lines: Vec<(usize, u32)> = self.cart.clone();
        let subtotal: i64 = lines.iter().map(|&(pid, q)| self.cat.info[pid].price_minor * i64::from(q)).sum();
        let products = self.cart_products();
        let mut props = Map::new();
        put(&mut props, "order_id", order_id.as_str());
        put(&mut props, "checkout_id", checkout_id.as_str());
        put(&mut props, "value", self.cur.json(subtotal));
        put(&mut props, "revenue", self.cur.json(subtotal));
        put(&mut props, "currency", self.currency.clone());
        put(&mut props, "products", products.clone());
        self.track("Checkout Started", props);

        // Email is entered at checkout: the moment an anonymous device becomes known.
        let needs_identify = !self.dev_identified[self.dev];
        if (needs_identify && (complete || chance(&mut self.rng, 0.5))) || (complete && chance(&mut self.rng, 0.1)) {
            self.pause(10.0, 60.0);
            self.identify(Traits::Checkout);
        }
        if !complete {
            return;
        }

        let coupon = self.coupon();
        let discount = coupon.map_or(0, |(_, pct, _)| (subtotal * pct + 50) / 100);
        if let Some((code, pct, _)) = coupon {
            self.pause(5.0, 40.0);
            let mut props = Map::new();
            put(&mut props, "order_id", order_id.as_str());
            put(&mut props, "cart_id", cart_id.as_str());
            put(&mut props, "coupon_id", code);
            let name = if pct > 0 { format!("{pct}% off") } else { "Free shipping".to_owned() };
            put(&mut props, "coupon_name", name);
            put(&mut props, "discount", self.cur.json(discount));
            self.track("Coupon Applied", props);
        }
        let revenue = subtotal - discount;
        let free_shipping = coupon.is_some_and(|c| c.2) || revenue >= self.cur.amount(FREE_SHIPPING_USD);
        let shipping = if free_shipping { 0 } else { self.cur.amount(SHIPPING_USD) };
        let tax = (revenue as f64 * self.p.city.tax_rate).round() as i64;
        let total = revenue + shipping + tax;

        self.pause(30.0, 240.0);
        if self.now >= self.end {
            return;
        }
        let mut props = Map::new();
        put(&mut props, "order_id", order_id.as_str());
        put(&mut props, "checkout_id", checkout_id.as_str());
        put(&mut props, "total", self.cur.json(total));
        put(&mut props, "revenue", self.cur.json(revenue));
        put(&mut props, "subtotal", self.cur.json(subtotal));
        put(&mut props, "shipping", self.cur.json(shipping));
        put(&mut props, "tax", self.cur.json(tax));
        put(&mut props, "discount", self.cur.json(discount));
        if let Some((code, _, _)) = coupon {
            put(&mut props, "coupon", code);
        }
        put(&mut props, "currency", self.currency.clone());
        put(&mut props, "products", products.clone());
        self.track("Order Completed", props);
        self.n_orders += 1;
        let thanks = format!("/checkouts/{checkout_id}/thank_you");
        self.page("Order Confirmation", &thanks, "", &format!("Thank you | {STORE_NAME}"));

        for &(pid, _) in &lines {
            if CATEGORIES[self.cat.info[pid].cat].cycle_days.is_some() && !self.staples.contains(&pid) {
                self.staples.push(pid);
            }
        }
        self.staples.truncate(3);

        if chance(&mut self.rng, REFUND_RATE) {
            let at = self.now + (uniform(&mut self.rng, 2.0, 14.0) * DAY_MS as f64) as i64;
            let (refund_total, refund_products) = if lines.len() > 1 && chance(&mut self.rng, 0.3) {
                // Partial: one line returned.
                let i = index(&mut self.rng, lines.len());
                let (pid, q) = lines[i];
                (self.cat.info[pid].price_minor * i64::from(q), vec![products[i].clone()])
            } else {
                (total, products)
            };
            let mut props = Map::new();
            put(&mut props, "order_id", order_id.as_str());
            put(&mut props, "total", self.cur.json(refund_total));
            put(&mut props, "currency", self.currency.clone());
            put(&mut props, "products", refund_products);
            self.server_track(at, "Order Refunded", props);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, SecondsFormat, Utc};

    #[test]
    fn timestamp_format_matches_chrono() {
        for ms in [0_i64, 1_735_689_600_000, 1_767_225_599_999, 951_782_400_123, 4_102_444_800_000, 1_709_164_800_500] {
            let chrono = DateTime::<Utc>::from_timestamp_millis(ms)
                .expect("in range")
                .to_rfc3339_opts(SecondsFormat::Millis, true);
            assert_eq!(rfc3339_ms(ms), chrono);
        }
    }
}
