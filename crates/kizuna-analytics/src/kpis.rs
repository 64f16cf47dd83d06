//! Store KPIs over trailing periods (the last 7, 30, 90, 365 days before the reporting instant), each with its
//! daily series for sparklines and the figures of the period before it for comparison. Computed by the analytics
//! run from the same order records as the store metrics, so the admin home page reads a few hundred numbers
//! instead of scanning orders.

use crate::metrics::CustomerOrders;
use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

/// The periods the report carries, in days.
pub const PERIODS: [i64; 4] = [7, 30, 90, 365];

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct PeriodFigures {
    pub revenue: f64,
    pub orders: u64,
    /// Revenue per order.
    pub aov: Option<f64>,
    /// Customers with at least one order in the period.
    pub active_customers: u64,
    /// Of the active customers, those whose first order was in the period.
    pub new_customers: u64,
    /// Share of the active customers who had ordered before the period or ordered twice in it.
    pub repeat_purchase_rate: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DayFigures {
    pub date: NaiveDate,
    pub revenue: f64,
    pub orders: u64,
    pub customers: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PeriodKpis {
    pub days: i64,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub current: PeriodFigures,
    /// The same figures for the period just before (`from - days` to `from`).
    pub previous: PeriodFigures,
    /// One entry per calendar day (UTC) the period touches, oldest first, so the first partial day counts too;
    /// days without orders are zeros. The entries add up to `current`.
    pub daily: Vec<DayFigures>,
}

/// KPIs for each of `periods` (days) ending at `as_of`.
pub fn period_kpis(customers: &[CustomerOrders], as_of: DateTime<Utc>, periods: &[i64]) -> Vec<PeriodKpis> {
    periods
        .iter()
        .map(|&days| {
            let from = as_of - Duration::days(days);
            let current = figures(customers, from, as_of);
            let previous = figures(customers, from - Duration::days(days), from);
            PeriodKpis { days, from, to: as_of, current, previous, daily: daily(customers, from, as_of) }
        })
        .collect()
}

fn figures(customers: &[CustomerOrders], from: DateTime<Utc>, to: DateTime<Utc>) -> PeriodFigures {
    let mut out = PeriodFigures::default();
    let mut repeat = 0u64;
    for customer in customers {
        let inside: Vec<_> = customer.orders.iter().filter(|o| o.at > from && o.at <= to).collect();
        if inside.is_empty() {
            continue;
        }
        out.active_customers += 1;
        out.orders += inside.len() as u64;
        out.revenue += inside.iter().map(|o| if o.net_value.is_finite() { o.net_value } else { 0.0 }).sum::<f64>();
        let ordered_before = customer.orders.iter().any(|o| o.at <= from);
        if !ordered_before {
            out.new_customers += 1;
        }
        if ordered_before || inside.len() >= 2 {
            repeat += 1;
        }
    }
    out.aov = (out.orders > 0).then(|| out.revenue / out.orders as f64);
    out.repeat_purchase_rate = (out.active_customers > 0).then(|| repeat as f64 / out.active_customers as f64);
    out
}

fn daily(customers: &[CustomerOrders], from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<DayFigures> {
    let first = from.date_naive();
    let days = (to.date_naive() - first).num_days() + 1;
    let mut out: Vec<DayFigures> = (0..days)
        .filter_map(|i| first.checked_add_signed(Duration::days(i)))
        .map(|date| DayFigures { date, revenue: 0.0, orders: 0, customers: 0 })
        .collect();
    let Some(start) = out.first().map(|d| d.date) else { return out };
    for customer in customers {
        let mut last_day: Option<usize> = None;
        let mut orders: Vec<_> = customer.orders.iter().filter(|o| o.at > from && o.at <= to).collect();
        orders.sort_by_key(|o| o.at);
        for order in orders {
            let index = (order.at.date_naive() - start).num_days();
            let Some(day) = usize::try_from(index).ok().and_then(|i| out.get_mut(i)) else { continue };
            day.orders += 1;
            day.revenue += if order.net_value.is_finite() { order.net_value } else { 0.0 };
            if last_day != Some(index as usize) {
                day.customers += 1;
                last_day = Some(index as usize);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::OrderRecord;
    use chrono::TimeZone;

    fn at(day: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, day, 12, 0, 0).single().expect("valid date")
    }

    fn customer(id: &str, orders: &[(u32, f64)]) -> CustomerOrders {
        CustomerOrders {
            customer_id: id.into(),
            orders: orders.iter().map(|&(d, v)| OrderRecord { at: at(d), net_value: v, categories: vec![] }).collect(),
        }
    }

    #[test]
    fn periods_count_revenue_customers_and_repeat_share_with_the_period_before() {
        let customers = vec![
            customer("returning", &[(1, 10.0), (25, 30.0)]),
            customer("new-twice", &[(24, 20.0), (26, 40.0)]),
            customer("new-once", &[(27, 50.0)]),
            customer("old", &[(15, 100.0)]),
        ];
        let as_of = at(28);
        let kpis = period_kpis(&customers, as_of, &[7]);
        let week = &kpis[0];
        assert_eq!(week.current.orders, 4);
        assert_eq!(week.current.revenue, 140.0);
        assert_eq!(week.current.aov, Some(35.0));
        assert_eq!(week.current.active_customers, 3);
        assert_eq!(week.current.new_customers, 2);
        // returning (ordered before) and new-twice (two orders inside) repeat; new-once does not.
        assert_eq!(week.current.repeat_purchase_rate, Some(2.0 / 3.0));
        assert_eq!(week.previous.orders, 1, "only the order of the 15th falls in the week before");
        assert_eq!(week.previous.revenue, 100.0);
        assert_eq!(week.daily.len(), 8, "the 21st (partly inside) to the 28th");
        assert_eq!(week.daily.iter().map(|d| d.orders).sum::<u64>(), week.current.orders, "the days add up");
        assert_eq!(week.daily.iter().map(|d| d.revenue).sum::<f64>(), week.current.revenue);
        let day24 = week.daily.iter().find(|d| d.date == at(24).date_naive()).expect("the 24th");
        assert_eq!((day24.orders, day24.customers, day24.revenue), (1, 1, 20.0));
        assert_eq!(week.daily.last().map(|d| d.date), Some(at(28).date_naive()));
    }

    #[test]
    fn an_empty_store_has_zero_figures_and_no_ratios() {
        let kpis = period_kpis(&[], at(28), &PERIODS);
        assert_eq!(kpis.len(), 4);
        assert_eq!(kpis[1].daily.len(), 31);
        assert_eq!(kpis[0].current.aov, None);
        assert_eq!(kpis[0].current.repeat_purchase_rate, None);
    }
}
