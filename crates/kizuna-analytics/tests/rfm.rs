//! RFM quintiles and segment names on a hand-made set.

use kizuna_analytics::rfm::{self, RfmInput, Segment};

fn input(id: &str, recency: f64, frequency: f64, monetary: f64) -> RfmInput {
    RfmInput { customer_id: id.into(), recency, frequency, monetary }
}

#[test]
fn quintile_edges_and_segments() {
    let inputs = vec![
        input("c1", 1.0, 10.0, 100.0),
        input("c2", 2.0, 1.0, 90.0),
        input("c3", 3.0, 2.0, 80.0),
        input("c4", 4.0, 9.0, 70.0),
        input("c5", 5.0, 5.0, 60.0),
        input("c6", 6.0, 3.0, 50.0),
        input("c7", 7.0, 4.0, 40.0),
        input("c8", 8.0, 7.0, 30.0),
        input("c9", 9.0, 8.0, 20.0),
        input("c10", 10.0, 6.0, 10.0),
    ];
    let (scores, edges) = rfm::score(&inputs).expect("non-empty");
    assert_eq!(edges.recency, [2.0, 4.0, 6.0, 8.0]);
    assert_eq!(edges.frequency, [2.0, 4.0, 6.0, 8.0]);
    assert_eq!(edges.monetary, [20.0, 40.0, 60.0, 80.0]);
    let got: Vec<(u8, u8, u8, Segment)> = scores.iter().map(|s| (s.r, s.f, s.m, s.segment)).collect();
    let want = vec![
        (5, 5, 5, Segment::Champions),
        (5, 1, 5, Segment::NewCustomers),
        (4, 1, 4, Segment::Promising),
        (4, 5, 4, Segment::LoyalCustomers),
        (3, 3, 3, Segment::NeedAttention),
        (3, 2, 3, Segment::AboutToSleep),
        (2, 2, 2, Segment::Hibernating),
        (2, 4, 2, Segment::AtRisk),
        (1, 4, 1, Segment::AtRisk),
        (1, 3, 1, Segment::AtRisk),
    ];
    assert_eq!(got, want);
    assert_eq!(scores[0].customer_id, "c1");
    assert_eq!(Segment::CantLoseThem.to_string(), "can't lose them");
}

#[test]
fn ties_get_equal_scores() {
    let freqs = [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 2.0, 3.0, 4.0, 5.0];
    let inputs: Vec<RfmInput> =
        freqs.iter().enumerate().map(|(i, f)| input(&format!("c{i}"), 1.0 + i as f64, *f, 1.0)).collect();
    let (scores, edges) = rfm::score(&inputs).expect("non-empty");
    assert_eq!(edges.frequency, [1.0, 1.0, 1.0, 3.0]);
    let f: Vec<u8> = scores.iter().map(|s| s.f).collect();
    assert_eq!(f, vec![1, 1, 1, 1, 1, 1, 4, 4, 5, 5]);
    // All monetary values tied: everyone scores 1, never split arbitrarily.
    assert!(scores.iter().all(|s| s.m == 1));
}

#[test]
fn full_segment_table() {
    let table = [
        // F = 1..5 for R = 5, 4, 3, 2, 1
        (5, ["new customers", "potential loyalists", "potential loyalists", "champions", "champions"]),
        (4, ["promising", "potential loyalists", "potential loyalists", "loyal customers", "loyal customers"]),
        (3, ["about to sleep", "about to sleep", "need attention", "loyal customers", "loyal customers"]),
        (2, ["hibernating", "hibernating", "at risk", "at risk", "can't lose them"]),
        (1, ["lost", "lost", "at risk", "at risk", "can't lose them"]),
    ];
    for (r, row) in table {
        for (f, name) in (1u8..=5).zip(row) {
            assert_eq!(Segment::from_scores(r, f).label(), name, "R{r} F{f}");
        }
    }
}

#[test]
fn empty_and_non_finite_inputs_are_errors() {
    assert!(rfm::score(&[]).is_err());
    assert!(rfm::score(&[input("x", f64::NAN, 1.0, 1.0)]).is_err());
}
