//! The fits recover the parameters a simulated customer base was generated with.

use kizuna_analytics::simulate::{self, SimulationOptions};
use kizuna_analytics::{BgNbd, FitOptions, GammaGamma, bgnbd, gamma_gamma};

fn assert_rel(name: &str, got: f64, want: f64, rel: f64) {
    assert!((got - want).abs() <= rel * want, "{name}: fitted {got}, generated with {want} (tolerance {rel} relative)");
}

#[test]
fn fits_recover_the_generating_parameters_of_a_simulated_base() {
    // CDNOW-like parameters (weeks), 50,000 customers acquired over 12 weeks, 39-week calibration.
    let truth = BgNbd::new(0.243, 4.414, 0.793, 2.426).expect("valid");
    let spend_truth = GammaGamma::new(6.25, 3.74, 15.44).expect("valid");
    let opts = SimulationOptions { customers: 50_000, seed: 2024, ..SimulationOptions::default() };
    let s = simulate::simulate_summaries(&truth, &spend_truth, &opts).expect("simulates");
    assert_eq!(s.len(), 50_000);

    let (m, report) = bgnbd::fit(&s, &FitOptions::default()).expect("BG/NBD fit");
    println!("simulated BG/NBD fit: {m:?}, log-likelihood {}", report.log_likelihood);
    assert!(report.converged);
    // Tolerances of about three standard errors at this size: r and α are well determined,
    // a and b (the dropout Beta) much less so, their mean a/(a+b) again well.
    assert_rel("r", m.r, truth.r, 0.06);
    assert_rel("alpha", m.alpha, truth.alpha, 0.08);
    assert_rel("a", m.a, truth.a, 0.2);
    assert_rel("b", m.b, truth.b, 0.2);
    assert_rel("a/(a+b)", m.a / (m.a + m.b), truth.a / (truth.a + truth.b), 0.05);
    // The maximum likelihood is at least the likelihood of the truth, and not far above it
    // (twice the gap is about chi-square with 4 degrees of freedom).
    let gap = report.log_likelihood - truth.log_likelihood(&s);
    assert!((0.0..15.0).contains(&gap), "log-likelihood gap {gap}");

    let (g, report) = gamma_gamma::fit(&s, &FitOptions::default()).expect("Gamma-Gamma fit");
    println!("simulated Gamma-Gamma fit: {g:?}, {} repeat buyers", report.n_customers);
    assert!(report.converged);
    assert_rel("p", g.p, spend_truth.p, 0.1);
    assert_rel("q", g.q, spend_truth.q, 0.1);
    assert_rel("gamma", g.gamma, spend_truth.gamma, 0.1);
    assert_rel("mean spend", g.mean_spend(), spend_truth.mean_spend(), 0.03);
}
