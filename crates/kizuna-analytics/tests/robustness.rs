//! Numerical robustness: extreme histories, wide parameter ranges.

use kizuna_analytics::{BgNbd, GammaGamma, ParetoNbd, clv};
use proptest::prelude::*;

#[test]
fn huge_frequency_stays_finite() {
    let bg = BgNbd::new(0.243, 4.414, 0.793, 2.426).expect("valid");
    // mpmath reference for the untransformed FHL eq. 10 (which overflows in double precision).
    let e = bg.conditional_expected(39.0, 300.0, 400.0, 400.0);
    assert!((e - 27.840_093_483_587_29).abs() < 1e-8, "E = {e}");
    let expect = 1.0 / (1.0 + 0.793 / (2.426 + 299.0));
    assert!((bg.p_alive(300.0, 400.0, 400.0) - expect).abs() < 1e-12);
    // Long inactive heavy buyer: P(alive) underflows gracefully to ~4e-87, expectation ~1e-85.
    let p = bg.p_alive(300.0, 200.0, 400.0);
    assert!(p.is_finite() && (p - 4.104_302_514_044_996e-87).abs() < 1e-95, "p = {p}");
    let e = bg.conditional_expected(39.0, 300.0, 200.0, 400.0);
    assert!(e.is_finite() && (e - 1.145_647_750_572_791e-85).abs() < 1e-93, "E = {e}");
    assert!(bg.log_likelihood_one(300.0, 400.0, 400.0).is_finite());
    assert!(bg.expected(1e6).is_finite());

    let pn = ParetoNbd::new(0.553, 10.578, 0.606, 11.669).expect("valid");
    for (x, tx, t) in [(300.0, 400.0, 400.0), (300.0, 200.0, 400.0), (5000.0, 1000.0, 1000.0), (0.0, 0.0, 1e4)] {
        let p = pn.p_alive(x, tx, t);
        let e = pn.conditional_expected(39.0, x, tx, t);
        let ll = pn.log_likelihood_one(x, tx, t);
        assert!((0.0..=1.0).contains(&p) && e.is_finite() && e >= 0.0 && ll.is_finite(), "{x} {tx} {t}: {p} {e} {ll}");
    }
    // alpha > beta branch of the likelihood with z close to 1.
    let pn2 = ParetoNbd::new(0.5, 50.0, 0.7, 0.01).expect("valid");
    assert!(pn2.log_likelihood_one(300.0, 200.0, 400.0).is_finite());
    assert!((0.0..=1.0).contains(&pn2.p_alive(300.0, 200.0, 400.0)));

    let g = GammaGamma::new(6.25, 3.74, 15.44).expect("valid");
    assert!(g.log_likelihood_one(300.0, 35.0).is_finite());
    let v = clv::customer_lifetime_value(
        &bg,
        &g,
        &kizuna_analytics::CustomerSummary {
            monetary: 35.0,
            ..kizuna_analytics::CustomerSummary::from_stats("x", 300, 400.0, 400.0)
        },
        &clv::ClvOptions::default(),
    );
    assert!(v.is_finite() && v > 0.0);
}

#[test]
fn bgnbd_near_a_equal_one_is_continuous() {
    let below = BgNbd::new(0.3, 5.0, 1.0 - 1e-7, 2.0).expect("valid");
    let at = BgNbd::new(0.3, 5.0, 1.0, 2.0).expect("valid");
    let above = BgNbd::new(0.3, 5.0, 1.0 + 1e-3, 2.0).expect("valid");
    let e = |m: &BgNbd| m.conditional_expected(20.0, 3.0, 10.0, 30.0);
    assert!((e(&below) - e(&at)).abs() < 1e-6);
    assert!((e(&above) - e(&at)).abs() < 1e-2 * e(&at));
    assert!(at.expected(52.0).is_finite() && at.expected(52.0) > 0.0);
}

fn history() -> impl Strategy<Value = (f64, f64, f64)> {
    (0u32..2000, 0.0f64..1.0, 0.01f64..2000.0).prop_map(|(x, frac, t)| {
        let tx = if x == 0 { 0.0 } else { frac * t };
        (f64::from(x), tx, t)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn bgnbd_outputs_are_probabilities_and_finite(
        r in 0.01f64..50.0, alpha in 0.01f64..500.0, a in 0.01f64..20.0, b in 0.01f64..20.0,
        (x, tx, t) in history(), horizon in 0.0f64..1000.0,
    ) {
        let m = BgNbd::new(r, alpha, a, b).expect("valid");
        let p = m.p_alive(x, tx, t);
        prop_assert!((0.0..=1.0).contains(&p), "p_alive {}", p);
        let e = m.conditional_expected(horizon, x, tx, t);
        prop_assert!(e.is_finite() && e >= 0.0, "conditional expected {}", e);
        let u = m.expected(horizon);
        prop_assert!(u.is_finite() && u >= 0.0, "expected {}", u);
        prop_assert!(m.log_likelihood_one(x, tx, t).is_finite());
    }

    #[test]
    fn pareto_nbd_outputs_are_probabilities_and_finite(
        r in 0.01f64..50.0, alpha in 0.01f64..500.0, s in 0.01f64..20.0, beta in 0.01f64..500.0,
        (x, tx, t) in history(), horizon in 0.0f64..1000.0,
    ) {
        let m = ParetoNbd::new(r, alpha, s, beta).expect("valid");
        let p = m.p_alive(x, tx, t);
        prop_assert!((0.0..=1.0).contains(&p), "p_alive {}", p);
        let e = m.conditional_expected(horizon, x, tx, t);
        prop_assert!(e.is_finite() && e >= 0.0, "conditional expected {}", e);
        prop_assert!(m.expected(horizon).is_finite() && m.expected(horizon) >= 0.0);
    }

    #[test]
    fn conditional_expectation_is_monotone_in_horizon(
        (x, tx, t) in history(), h in 0.1f64..200.0,
    ) {
        let m = BgNbd::new(0.243, 4.414, 0.793, 2.426).expect("valid");
        let e1 = m.conditional_expected(h, x, tx, t);
        let e2 = m.conditional_expected(2.0 * h, x, tx, t);
        prop_assert!(e2 >= e1 * (1.0 - 1e-9), "{} < {}", e2, e1);
    }
}
