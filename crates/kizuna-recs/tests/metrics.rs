//! The evaluation protocol on tiny data sets whose answers can be worked out by hand.

use kizuna_recs::eval::{Dataset, Interaction, Split, SplitKind, popularity, score, split, top_k};

fn dataset() -> Dataset {
    // User 0: items 0..10 at times 0..10; user 1: items 5..10; user 2: a single interaction.
    let mut interactions = Vec::new();
    for i in 0..10 {
        interactions.push(Interaction { user: 0, item: i, at: i64::from(i), weight: 1.0 });
    }
    for i in 5..10 {
        interactions.push(Interaction { user: 1, item: i, at: 100 - i64::from(i), weight: 1.0 });
    }
    interactions.push(Interaction { user: 2, item: 3, at: 0, weight: 1.0 });
    Dataset { name: "tiny".into(), users: 3, items: 12, interactions }
}

#[test]
fn time_split_holds_out_the_latest_fifth() {
    let s = split(&dataset(), SplitKind::Time, 1);
    assert_eq!(s.test[0], [8, 9]);
    assert_eq!(s.test[1], [5]); // user 1's latest is item 5 (time 95)
    assert!(s.test[2].is_empty(), "a single interaction stays in training");
    assert_eq!(s.seen[0], (0..8).collect::<Vec<u32>>());
    assert_eq!(s.train.len(), 8 + 4 + 1);
}

#[test]
fn random_split_is_seeded_and_sized() {
    let a = split(&dataset(), SplitKind::Random, 7);
    let b = split(&dataset(), SplitKind::Random, 7);
    assert_eq!(a.test, b.test);
    assert_eq!(a.test[0].len(), 2);
    assert_eq!(a.test[1].len(), 1);
    for (seen, test) in a.seen.iter().zip(&a.test) {
        assert!(test.iter().all(|t| seen.binary_search(t).is_err()));
    }
}

#[test]
fn metrics_by_hand() {
    let s = Split { train: vec![], test: vec![vec![1, 4], vec![], vec![7]], seen: vec![vec![]; 3], items: 10 };
    // User 0: hits at ranks 1 and 3; user 2: no hit in the list.
    let ranked = vec![vec![1, 2, 4], vec![3], vec![0, 2]];
    let m = score(&s, &ranked);
    assert_eq!(m.users, 2);
    assert!((m.recall_20 - 0.5).abs() < 1e-12);
    let user0 = (1.0 + 1.0 / 4f64.log2()) / (1.0 + 1.0 / 3f64.log2());
    assert!((m.ndcg_10 - user0 / 2.0).abs() < 1e-12, "{}", m.ndcg_10);
    assert!((m.ndcg_100 - m.ndcg_10).abs() < 1e-12);
    // Items shown in top 20 to evaluated users: {1, 2, 4, 0} of 10.
    assert!((m.coverage - 0.4).abs() < 1e-12);
}

#[test]
fn top_k_skips_seen_and_breaks_ties_by_item() {
    assert_eq!(top_k(&[0.5, 0.9, 0.9, 0.1, 0.7], &[2], 3), [1, 4, 0]);
}

#[test]
fn popularity_ranks_by_training_users() {
    let s = split(&dataset(), SplitKind::Time, 1);
    let p = popularity(&s, 3);
    // Items 3, 6 and 7 are in two users' training sets; user 2 saw item 3; the rest tie at one user.
    assert_eq!(p[2], [6, 7, 0]);
}
