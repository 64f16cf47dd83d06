//! `kizuna segment` as users run it: check with positions, create from a template after an import, preview,
//! list.

mod common;

use common::{kizuna, run};

#[test]
fn check_create_preview_and_list_segments_on_an_imported_store() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let data = data.to_str().expect("path");

    let checked = run(&["segment", "check", r#"count of event "Order Completed" in the last 90 days >= 2"#]);
    assert_eq!(checked.trim(), r#"count of event "Order Completed" in last 90d >= 2"#);
    let json = run(&["segment", "check", "--json", "has email"]);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&json).expect("json"),
        serde_json::json!({"has_identifier": "email"})
    );
    let bad =
        kizuna().args(["segment", "check", "traits.vip = true and\nevent \"A\" in last 7"]).output().expect("run");
    assert!(!bad.status.success());
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(stderr.contains("definition:2:20: expected a unit after 7"), "{stderr}");

    let orders = dir.path().join("orders.csv");
    std::fs::write(
        &orders,
        "order_id,user_id,email,created_at,currency,product_id,sku,name,category,brand,price,quantity\n\
         1001,c1,c1@example.com,2025-03-01T10:00:00+09:00,JPY,p1,SKU1,Beans,Coffee,Kumo,1800,2\n\
         1002,c1,c1@example.com,2025-06-01T10:00:00+09:00,JPY,p1,SKU1,Beans,Coffee,Kumo,1800,1\n\
         1003,c2,c2@example.com,2025-06-02T10:00:00+09:00,JPY,p2,SKU2,Mug,Home,Kumo,1200,1\n",
    )
    .expect("csv");
    run(&["import", "orders", orders.to_str().expect("path"), "--data-dir", data]);
    let created = run(&["segment", "create", "repeat", "--template", "repeat-buyers", "--data-dir", data]);
    assert!(created.contains("segment \"repeat\" version 1: 1 members"), "{created}");
    let preview = run(&["segment", "preview", r#"event "Order Completed""#, "--data-dir", data]);
    assert!(preview.starts_with("2 of 2 profiles match"), "{preview}");
    let listed = run(&["segment", "list", "--data-dir", data]);
    assert!(listed.contains("repeat\t1 members\tv1\tcomputed.orders_count >= 2"), "{listed}");
    let templates = run(&["segment", "templates"]);
    assert!(templates.contains("cart-abandoners-24h"), "{templates}");
}
