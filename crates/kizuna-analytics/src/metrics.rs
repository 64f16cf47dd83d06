//! Store metrics: headline figures, cohort retention, repeat purchase rate, AOV of first vs
//! repeat orders, time between orders (overall and per category) and the distribution of
//! revenue per customer.
//!
//! Pure computation: no I/O and no clock reads — the reporting instant is
//! [`MetricsOptions::as_of`].
//!
//! ## Input conventions
//! * The caller has already removed cancelled and fully refunded orders and netted partial
//!   refunds into [`OrderRecord::net_value`].
//! * Each [`CustomerOrders`] entry is one customer; entries are not merged by `customer_id`.
//! * Orders may come in any order; each customer's orders are sorted by [`OrderRecord::at`]
//!   (a stable sort, so orders with the same timestamp keep their input order).
//! * Orders placed after `as_of` are ignored everywhere (they are only counted in
//!   [`StoreMetrics::orders_after_as_of`]); orders exactly at `as_of` count.
//! * **Same-day orders are not collapsed**: this is a store report and every order counts as
//!   an order (unlike the customer-base models of [`crate::prepare`], which merge a customer's
//!   purchases on one day). Two orders on the same day give a gap of 0 days.
//! * A customer without any order on or before `as_of` (no orders at all, or only later
//!   ones) is counted in [`StoreMetrics::customers_without_orders`] and in nothing else.
//! * A `net_value` that is NaN or infinite is counted as 0.0 (the order still counts) and
//!   reported in [`StoreMetrics::non_finite_values`], so one bad record cannot poison the
//!   report.
//!
//! ## Definitions
//! * **Percentiles** use linear interpolation between closest ranks (numpy's default): for
//!   sorted values `x[0..n]` and `q ∈ [0, 1]`, `h = (n − 1)·q` and the percentile is
//!   `x[⌊h⌋] + (h − ⌊h⌋)·(x[⌊h⌋+1] − x[⌊h⌋])`; see [`quantile_sorted`].
//! * Undefined figures (means, rates and percentiles of empty sets) are `None`, never NaN.
//! * **Cohorts** group customers by the UTC calendar month (`"YYYY-MM"`) of their first order.
//!   For cohort month `c`, offset `k` runs over `0..=min(max_cohort_months, months from c to
//!   the month of as_of)`, so only months that are at least partly observed appear (the month
//!   containing `as_of` is included and is partial). `retention[k]` is the share of the cohort
//!   that placed at least one order in calendar month `c + k` (so `retention[0] = 1.0`);
//!   `cumulative_repeat[k]` is the share whose second order was placed by the end of month
//!   `c + k` (a second order in month `c` counts at `k = 0`).
//! * **Repeat purchase rate**: customers with ≥ 2 orders / customers with ≥ 1 order.
//! * **First vs repeat AOV**: mean `net_value` of each customer's first order, and of all
//!   their later orders.
//! * **Gaps** between consecutive orders of a customer are whole UTC calendar days
//!   (`date(next) − date(previous)`). The histogram buckets are fixed ([`GAP_BUCKETS`]):
//!   0–7, 8–14, 15–30, 31–60, 61–90, 91–180, 181–365 and 366+ days (bounds inclusive).
//! * **Per-category gaps**: for each category, the gaps between consecutive orders *among a
//!   customer's orders that contain that category* (orders without the category in between
//!   are skipped), i.e. the category's re-purchase interval ("customers re-buy coffee every
//!   28 days"). A category listed twice in one order counts once. Categories are sorted by
//!   number of gaps (descending, then by name); categories without any gap are omitted.
//! * **Revenue per customer**: the sum of a customer's net order values. The top 10% (20%) are
//!   the `⌈0.1·n⌉` (`⌈0.2·n⌉`) customers with the highest revenue; their share is their
//!   revenue / total revenue (`None` when the total is not positive).

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Datelike, Utc};
use serde::{Deserialize, Serialize};

/// One order of a customer, as seen by the store report.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OrderRecord {
    /// When the order was placed.
    pub at: DateTime<Utc>,
    /// Order value net of partial refunds.
    pub net_value: f64,
    /// Product categories in the order (duplicates are ignored).
    pub categories: Vec<String>,
}

/// All orders of one customer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CustomerOrders {
    /// Customer (profile) identifier.
    pub customer_id: String,
    /// The customer's orders, in any order; may be empty.
    pub orders: Vec<OrderRecord>,
}

/// Options of [`store_metrics`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MetricsOptions {
    /// Reporting instant: orders after it are ignored, and it bounds the cohort months.
    pub as_of: DateTime<Utc>,
    /// Largest cohort month offset reported (e.g. 24).
    pub max_cohort_months: usize,
}

/// Store-level report produced by [`store_metrics`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StoreMetrics {
    /// The reporting instant the figures are computed at.
    pub as_of: DateTime<Utc>,
    /// Customers with at least one order on or before `as_of`.
    pub customers: u64,
    /// Customers without any order on or before `as_of`.
    pub customers_without_orders: u64,
    /// Orders on or before `as_of`.
    pub orders: u64,
    /// Orders ignored because they were placed after `as_of`.
    pub orders_after_as_of: u64,
    /// Counted orders whose `net_value` was NaN or infinite (treated as 0.0).
    pub non_finite_values: u64,
    /// Sum of the net values of the counted orders.
    pub revenue: f64,
    /// Mean net value of the counted orders.
    pub aov: Option<f64>,
    /// Customers with at least two orders.
    pub repeat_customers: u64,
    /// `repeat_customers / customers`.
    pub repeat_purchase_rate: Option<f64>,
    /// Average order value of first orders vs later orders.
    pub first_vs_repeat: FirstVsRepeat,
    /// Cohort retention by first-order month, oldest cohort first.
    pub cohorts: Vec<Cohort>,
    /// Gaps between consecutive orders of the same customer (all customers).
    pub order_gaps: OrderGaps,
    /// Per-category re-purchase gaps, most frequent first.
    pub category_gaps: Vec<CategoryGap>,
    /// Distribution of revenue per customer (customers with ≥ 1 order).
    pub revenue_per_customer: RevenueDistribution,
}

/// Average order value of first orders vs repeat (second and later) orders.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct FirstVsRepeat {
    /// Number of first orders (= customers).
    pub first_orders: u64,
    /// Mean net value of first orders.
    pub first_order_aov: Option<f64>,
    /// Number of second and later orders.
    pub repeat_orders: u64,
    /// Mean net value of second and later orders.
    pub repeat_order_aov: Option<f64>,
}

/// Retention of one first-order-month cohort.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Cohort {
    /// First-order month, `"YYYY-MM"` (UTC).
    pub month: String,
    /// Customers whose first order fell in this month.
    pub size: u64,
    /// `active[k]`: cohort customers with ≥ 1 order in month `month + k`.
    pub active: Vec<u64>,
    /// `retention[k] = active[k] / size`; `retention[0] = 1.0`.
    pub retention: Vec<f64>,
    /// `repeaters[k]`: cohort customers whose second order was placed by the end of month `month + k`.
    pub repeaters: Vec<u64>,
    /// `cumulative_repeat[k] = repeaters[k] / size`.
    pub cumulative_repeat: Vec<f64>,
}

/// Statistics of the gaps (whole days) between consecutive orders of a customer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OrderGaps {
    /// Number of gaps (= orders − customers).
    pub count: u64,
    /// Mean gap in days.
    pub mean_days: Option<f64>,
    /// 25th percentile in days.
    pub p25_days: Option<f64>,
    /// Median in days.
    pub median_days: Option<f64>,
    /// 75th percentile in days.
    pub p75_days: Option<f64>,
    /// Counts per bucket of [`GAP_BUCKETS`], in that order.
    pub histogram: Vec<GapBucket>,
}

/// One histogram bucket of gaps, bounds inclusive.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct GapBucket {
    /// Smallest gap in the bucket, in days.
    pub min_days: u32,
    /// Largest gap in the bucket, in days; `None` for the open last bucket.
    pub max_days: Option<u32>,
    /// Number of gaps in the bucket.
    pub count: u64,
}

/// Re-purchase interval of one category.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CategoryGap {
    /// The category.
    pub category: String,
    /// Number of gaps between consecutive orders (of one customer) containing the category.
    pub count: u64,
    /// Median of those gaps in days.
    pub median_days: f64,
}

/// Distribution of revenue per customer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct RevenueDistribution {
    /// 10th percentile.
    pub p10: Option<f64>,
    /// 25th percentile.
    pub p25: Option<f64>,
    /// Median.
    pub p50: Option<f64>,
    /// 75th percentile.
    pub p75: Option<f64>,
    /// 90th percentile.
    pub p90: Option<f64>,
    /// 99th percentile.
    pub p99: Option<f64>,
    /// Mean revenue per customer.
    pub mean: Option<f64>,
    /// Largest revenue of one customer.
    pub max: Option<f64>,
    /// Number of customers in the top 10% (`⌈0.1·n⌉`).
    pub top_10pct_customers: u64,
    /// Share of revenue from the top 10% of customers.
    pub top_10pct_share: Option<f64>,
    /// Number of customers in the top 20% (`⌈0.2·n⌉`).
    pub top_20pct_customers: u64,
    /// Share of revenue from the top 20% of customers.
    pub top_20pct_share: Option<f64>,
}

/// The fixed gap histogram buckets `(min_days, max_days)`, bounds inclusive; the last one is open.
pub const GAP_BUCKETS: [(u32, Option<u32>); 8] = [
    (0, Some(7)),
    (8, Some(14)),
    (15, Some(30)),
    (31, Some(60)),
    (61, Some(90)),
    (91, Some(180)),
    (181, Some(365)),
    (366, None),
];

/// Percentile `q ∈ [0, 1]` of already sorted values by linear interpolation between closest
/// ranks (numpy's default): `h = (n − 1)·q`, result `x[⌊h⌋] + (h − ⌊h⌋)·(x[⌊h⌋+1] − x[⌊h⌋])`.
/// `None` for an empty slice; `q` is clamped to `[0, 1]` (NaN is treated as 0).
pub fn quantile_sorted(sorted: &[f64], q: f64) -> Option<f64> {
    let last = sorted.len().checked_sub(1)?;
    let q = if q.is_nan() { 0.0 } else { q.clamp(0.0, 1.0) };
    let h = last as f64 * q;
    let lo = (h.floor() as usize).min(last);
    let hi = (lo + 1).min(last);
    let (a, b) = (sorted[lo], sorted[hi]);
    Some(a + (h - lo as f64) * (b - a))
}

fn mean(sum: f64, n: u64) -> Option<f64> {
    (n > 0).then(|| sum / n as f64)
}

fn month_index(at: &DateTime<Utc>) -> i64 {
    i64::from(at.year()) * 12 + i64::from(at.month0())
}

fn month_label(index: i64) -> String {
    format!("{:04}-{:02}", index.div_euclid(12), index.rem_euclid(12) + 1)
}

fn gap_bucket(days: i64) -> usize {
    GAP_BUCKETS.iter().position(|&(_, max)| max.is_none_or(|m| days <= i64::from(m))).unwrap_or(GAP_BUCKETS.len() - 1)
}

/// A counted order, prepared once per order.
struct Prepared<'a> {
    at: DateTime<Utc>,
    /// Days since the Common Era of the UTC date.
    day: i64,
    month: i64,
    value: f64,
    categories: &'a [String],
}

struct CohortAcc {
    size: u64,
    active: Vec<u64>,
    /// Customers whose second order falls in month offset k (not cumulative).
    second: Vec<u64>,
}

/// Computes the store report; see the [module documentation](self) for every definition.
///
/// Runs in `O(N log N)` for `N` orders (one sort per customer plus one sort of all gaps and
/// of all customer revenues); it allocates no per-order strings.
pub fn store_metrics(customers: &[CustomerOrders], opts: &MetricsOptions) -> StoreMetrics {
    let as_of = opts.as_of;
    let as_of_month = month_index(&as_of);

    let mut n_customers = 0u64;
    let mut without = 0u64;
    let mut n_orders = 0u64;
    let mut after = 0u64;
    let mut non_finite = 0u64;
    let mut revenue = 0.0f64;
    let mut repeat_customers = 0u64;
    let (mut first_sum, mut repeat_sum) = (0.0f64, 0.0f64);
    let mut cohorts: BTreeMap<i64, CohortAcc> = BTreeMap::new();
    let mut gaps: Vec<f64> = Vec::new();
    let mut histogram = [0u64; GAP_BUCKETS.len()];
    let mut category_gaps: HashMap<&str, Vec<f64>> = HashMap::new();
    let mut customer_revenue: Vec<f64> = Vec::new();

    let mut buf: Vec<Prepared<'_>> = Vec::new();
    let mut last_day_of_category: Vec<(&str, i64)> = Vec::new();

    for customer in customers {
        buf.clear();
        for o in &customer.orders {
            if o.at > as_of {
                after += 1;
                continue;
            }
            let value = if o.net_value.is_finite() {
                o.net_value
            } else {
                non_finite += 1;
                0.0
            };
            let date = o.at.date_naive();
            buf.push(Prepared {
                at: o.at,
                day: i64::from(date.num_days_from_ce()),
                month: month_index(&o.at),
                value,
                categories: &o.categories,
            });
        }
        if buf.is_empty() {
            without += 1;
            continue;
        }
        buf.sort_by_key(|o| o.at);
        let first = &buf[0];

        n_customers += 1;
        n_orders += buf.len() as u64;
        let total: f64 = buf.iter().map(|o| o.value).sum();
        revenue += total;
        customer_revenue.push(total);
        first_sum += first.value;
        repeat_sum += total - first.value;
        if buf.len() >= 2 {
            repeat_customers += 1;
        }

        // Cohort.
        let cohort_month = first.month;
        let k_max = usize::try_from(as_of_month - cohort_month).unwrap_or(0).min(opts.max_cohort_months);
        let acc = cohorts.entry(cohort_month).or_insert_with(|| CohortAcc {
            size: 0,
            active: vec![0; k_max + 1],
            second: vec![0; k_max + 1],
        });
        acc.size += 1;
        let mut previous_offset = None;
        for o in &buf {
            let Ok(k) = usize::try_from(o.month - cohort_month) else { continue };
            if k > k_max {
                break;
            }
            if previous_offset != Some(k) {
                acc.active[k] += 1;
                previous_offset = Some(k);
            }
        }
        let second_offset = buf.get(1).and_then(|second| usize::try_from(second.month - cohort_month).ok());
        if let Some(k) = second_offset.filter(|&k| k <= k_max) {
            acc.second[k] += 1;
        }

        // Gaps between consecutive orders.
        for pair in buf.windows(2) {
            let days = pair[1].day - pair[0].day;
            gaps.push(days as f64);
            histogram[gap_bucket(days)] += 1;
        }

        // Per-category re-purchase gaps.
        last_day_of_category.clear();
        for o in &buf {
            for (i, category) in o.categories.iter().enumerate() {
                if o.categories[..i].contains(category) {
                    continue;
                }
                let category = category.as_str();
                match last_day_of_category.iter_mut().find(|(c, _)| *c == category) {
                    Some((_, last_day)) => {
                        category_gaps.entry(category).or_default().push((o.day - *last_day) as f64);
                        *last_day = o.day;
                    }
                    None => last_day_of_category.push((category, o.day)),
                }
            }
        }
    }

    let cohorts = cohorts
        .into_iter()
        .map(|(month, acc)| {
            let size = acc.size as f64;
            let retention = acc.active.iter().map(|&a| a as f64 / size).collect();
            let repeaters: Vec<u64> = acc
                .second
                .iter()
                .scan(0u64, |running, &s| {
                    *running += s;
                    Some(*running)
                })
                .collect();
            let cumulative_repeat = repeaters.iter().map(|&r| r as f64 / size).collect();
            Cohort {
                month: month_label(month),
                size: acc.size,
                active: acc.active,
                retention,
                repeaters,
                cumulative_repeat,
            }
        })
        .collect();

    gaps.sort_unstable_by(f64::total_cmp);
    let gap_count = gaps.len() as u64;
    let order_gaps = OrderGaps {
        count: gap_count,
        mean_days: mean(gaps.iter().sum(), gap_count),
        p25_days: quantile_sorted(&gaps, 0.25),
        median_days: quantile_sorted(&gaps, 0.5),
        p75_days: quantile_sorted(&gaps, 0.75),
        histogram: GAP_BUCKETS
            .iter()
            .zip(histogram)
            .map(|(&(min_days, max_days), count)| GapBucket { min_days, max_days, count })
            .collect(),
    };

    let mut category_gaps: Vec<CategoryGap> = category_gaps
        .into_iter()
        .filter_map(|(category, mut v)| {
            v.sort_unstable_by(f64::total_cmp);
            let median_days = quantile_sorted(&v, 0.5)?;
            Some(CategoryGap { category: category.to_string(), count: v.len() as u64, median_days })
        })
        .collect();
    category_gaps.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.category.cmp(&b.category)));

    customer_revenue.sort_unstable_by(f64::total_cmp);
    let revenue_per_customer = revenue_distribution(&customer_revenue, revenue);

    StoreMetrics {
        as_of,
        customers: n_customers,
        customers_without_orders: without,
        orders: n_orders,
        orders_after_as_of: after,
        non_finite_values: non_finite,
        revenue,
        aov: mean(revenue, n_orders),
        repeat_customers,
        repeat_purchase_rate: mean(repeat_customers as f64, n_customers),
        first_vs_repeat: FirstVsRepeat {
            first_orders: n_customers,
            first_order_aov: mean(first_sum, n_customers),
            repeat_orders: n_orders - n_customers,
            repeat_order_aov: mean(repeat_sum, n_orders - n_customers),
        },
        cohorts,
        order_gaps,
        category_gaps,
        revenue_per_customer,
    }
}

/// `sorted` is ascending; `total` is the sum of `sorted`.
fn revenue_distribution(sorted: &[f64], total: f64) -> RevenueDistribution {
    let n = sorted.len();
    // ⌈n · percent / 100⌉ in integers (n as f64 * 0.1 can round above an integer, e.g. 30 · 0.1).
    let top = |percent: usize| -> (u64, Option<f64>) {
        let k = n.saturating_mul(percent).div_ceil(100).min(n);
        let share = (n > 0 && total > 0.0).then(|| sorted[n - k..].iter().sum::<f64>() / total);
        (k as u64, share)
    };
    let (top_10pct_customers, top_10pct_share) = top(10);
    let (top_20pct_customers, top_20pct_share) = top(20);
    RevenueDistribution {
        p10: quantile_sorted(sorted, 0.10),
        p25: quantile_sorted(sorted, 0.25),
        p50: quantile_sorted(sorted, 0.50),
        p75: quantile_sorted(sorted, 0.75),
        p90: quantile_sorted(sorted, 0.90),
        p99: quantile_sorted(sorted, 0.99),
        mean: mean(total, n as u64),
        max: sorted.last().copied(),
        top_10pct_customers,
        top_10pct_share,
        top_20pct_customers,
        top_20pct_share,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantile_matches_numpy_linear() {
        let x = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(quantile_sorted(&x, 0.0), Some(1.0));
        assert_eq!(quantile_sorted(&x, 1.0), Some(4.0));
        // h = 3 * 0.5 = 1.5 → 2.5; h = 3 * 0.1 = 0.3 → 1.3
        assert_eq!(quantile_sorted(&x, 0.5), Some(2.5));
        assert!((quantile_sorted(&x, 0.1).unwrap_or(f64::NAN) - 1.3).abs() < 1e-12);
        assert_eq!(quantile_sorted(&[7.0], 0.99), Some(7.0));
        assert_eq!(quantile_sorted(&[], 0.5), None);
    }

    #[test]
    fn buckets_are_inclusive() {
        assert_eq!(gap_bucket(0), 0);
        assert_eq!(gap_bucket(7), 0);
        assert_eq!(gap_bucket(8), 1);
        assert_eq!(gap_bucket(365), 6);
        assert_eq!(gap_bucket(366), 7);
        assert_eq!(gap_bucket(10_000), 7);
    }

    #[test]
    fn month_labels() {
        let at = DateTime::parse_from_rfc3339("1997-03-31T23:59:59Z").map(|d| d.with_timezone(&Utc));
        let at = at.unwrap_or_default();
        assert_eq!(month_label(month_index(&at)), "1997-03");
        assert_eq!(month_label(2024 * 12 + 11), "2024-12");
    }
}
