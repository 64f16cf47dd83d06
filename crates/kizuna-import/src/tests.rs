#![allow(clippy::unwrap_used)]

use serde_json::{Value, json};

use super::*;

fn run(kind: ImportKind, csv: &str) -> Vec<Result<ImportRecord, LineError>> {
    parse(kind, csv.as_bytes()).expect("header is recognised").collect()
}

fn ok_records(results: &[Result<ImportRecord, LineError>]) -> Vec<&ImportRecord> {
    results.iter().filter_map(|r| r.as_ref().ok()).collect()
}

fn errors(results: &[Result<ImportRecord, LineError>]) -> Vec<&LineError> {
    results.iter().filter_map(|r| r.as_ref().err()).collect()
}

fn messages(record: &ImportRecord) -> Vec<&Value> {
    record
        .items
        .iter()
        .map(|i| match i {
            ImportItem::Message(m) => m,
            ImportItem::Product(p) => panic!("expected a message, got product {p:?}"),
        })
        .collect()
}

fn product(record: &ImportRecord) -> &kizuna_catalog::Product {
    match record.items.as_slice() {
        [ImportItem::Product(p)] => p,
        other => panic!("expected one product, got {other:?}"),
    }
}

fn all_messages(results: &[Result<ImportRecord, LineError>]) -> Vec<Value> {
    ok_records(results)
        .into_iter()
        .flat_map(|r| &r.items)
        .filter_map(|i| match i {
            ImportItem::Message(m) => Some(m.clone()),
            ImportItem::Product(_) => None,
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------------------------
// Shopify customers

const SHOPIFY_CUSTOMERS: &str = "\
Customer ID,First Name,Last Name,Email,Accepts Email Marketing,Default Address Company,Default Address Address1,\
Default Address Address2,Default Address City,Default Address Province Code,Default Address Country Code,\
Default Address Zip,Default Address Phone,Phone,Accepts SMS Marketing,Total Spent,Total Orders,Note,Tax Exempt,Tags
'7391246213421,Yuki,Tanaka,Yuki.Tanaka@Example.jp,yes,,1-2-3 Jingumae,Apt 401,Shibuya-ku,JP-13,JP,'150-0001,,\
'+819012345678,no,12800.00,3,,no,\"vip, repeat-buyer\"
7391246213422,Ken,Sato,ken@example.com,maybe,,,,,,,,,,,0.00,0,,no,
7391246213423,Aiko,Suzuki,aiko@example.com,no,Suzuki Trading,4-5-6 Umeda,,Osaka,JP-27,JP,530-0001,,,yes,4500.00,1,\"Prefers delivery
after 6pm\",no,wholesale
,,,,,,,,,,,,,,,0.00,0,walk-in without contact details,no,
,Mia,Jones,mia@example.com,no,,,,,,,,,,,0.00,0,,no,
";

#[test]
fn shopify_customers_become_identify_messages() {
    let importer = parse(ImportKind::Customers, SHOPIFY_CUSTOMERS.as_bytes()).unwrap();
    assert_eq!(importer.format(), Format::Shopify);
    let results: Vec<_> = importer.collect();
    let ok = ok_records(&results);
    assert_eq!(ok.iter().map(|r| r.line).collect::<Vec<_>>(), vec![2, 4, 7]);

    let yuki = messages(ok[0])[0];
    assert_eq!(yuki["type"], "identify");
    assert_eq!(yuki["userId"], "shopify:7391246213421");
    assert!(yuki.get("anonymousId").is_none());
    assert_eq!(
        yuki["traits"],
        json!({
            "email": "yuki.tanaka@example.jp",
            "first_name": "Yuki",
            "last_name": "Tanaka",
            "phone": "+819012345678",
            "address": {
                "street": "1-2-3 Jingumae, Apt 401",
                "city": "Shibuya-ku",
                "state": "JP-13",
                "postal_code": "150-0001",
                "country": "JP"
            },
            "tags": ["vip", "repeat-buyer"],
            "consent": {"email": {"marketing": "granted"}, "sms": {"marketing": "denied"}}
        })
    );
    assert_eq!(yuki["context"]["traits"]["email"], "yuki.tanaka@example.jp");
    assert_eq!(yuki["context"]["library"]["name"], "kizuna-import");
    let id = yuki["messageId"].as_str().unwrap();
    assert!(id.starts_with("import:customer:shopify:7391246213421:"), "{id}");
    assert_eq!(id.rsplit(':').next().unwrap().len(), 16);

    let aiko = messages(ok[1])[0];
    assert_eq!(aiko["traits"]["company"], json!({"name": "Suzuki Trading"}));
    assert_eq!(aiko["traits"]["consent"]["sms"]["marketing"], "granted");
    assert!(aiko["traits"].get("note").is_none());

    // No Customer ID: the email identifies, through a deterministic anonymousId.
    let mia = messages(ok[2])[0];
    assert!(mia.get("userId").is_none());
    assert_eq!(mia["anonymousId"], "import:email:mia@example.com");
    assert_eq!(mia["context"]["traits"]["email"], "mia@example.com");
    assert!(mia["messageId"].as_str().unwrap().starts_with("import:customer:mia@example.com:"));

    let errs = errors(&results);
    assert_eq!(errs.len(), 2);
    assert_eq!(errs[0].line, 3);
    assert_eq!(errs[0].reason, "Accepts Email Marketing: expected yes/no or true/false, got 'maybe'");
    // The quoted note spans lines 4-5, so the contact-less customer is on line 6.
    assert_eq!(errs[1].line, 6);
    assert!(errs[1].reason.contains("missing identifier"), "{}", errs[1].reason);
    assert_eq!(errs[1].to_string(), format!("line 6: {}", errs[1].reason));
}

#[test]
fn shopify_customers_older_header_layout() {
    let csv = "\
First Name,Last Name,Email,Company,Address1,Address2,City,Province,Province Code,Country,Country Code,Zip,Phone,\
Accepts Marketing,Total Spent,Total Orders,Tags,Note,Tax Exempt
Jane,Doe,jane@example.com,,123 Main St,,Portland,Oregon,OR,United States,US,97201,+1 503-555-0123,yes,100.00,2,\
newsletter,,no
Raj,Patel,,,,,,,,,,,(555) 010-2000,no,0.00,0,,,no
";
    let results = run(ImportKind::Customers, csv);
    let msgs = all_messages(&results);
    assert_eq!(msgs.len(), 2, "{results:?}");
    assert_eq!(msgs[0]["anonymousId"], "import:email:jane@example.com");
    assert_eq!(
        msgs[0]["traits"]["address"],
        json!({"street": "123 Main St", "city": "Portland", "state": "OR", "postal_code": "97201", "country": "US"})
    );
    assert_eq!(msgs[0]["traits"]["consent"], json!({"email": {"marketing": "granted"}}));
    assert_eq!(msgs[0]["traits"]["tags"], json!(["newsletter"]));
    assert!(msgs[0]["traits"].get("total_spent").is_none());
    // Phone-only customers are identified by their phone.
    assert_eq!(msgs[1]["anonymousId"], "import:phone:5550102000");
    assert_eq!(msgs[1]["context"]["traits"]["phone"], "(555) 010-2000");
}

#[test]
fn customer_message_ids_follow_content() {
    let header = "Customer ID,First Name,Last Name,Email,Accepts Email Marketing\n";
    let id_of = |line: &str| {
        let results = run(ImportKind::Customers, &format!("{header}{line}\n"));
        all_messages(&results)[0]["messageId"].as_str().unwrap().to_owned()
    };
    let original = id_of("42,Ann,Lee,ann@example.com,yes");
    assert_eq!(original, id_of("42,Ann,Lee,ann@example.com,yes"));
    assert_eq!(original, id_of(" 42 , Ann ,Lee,ANN@example.com,YES"), "normalised content gives the same id");
    assert_ne!(original, id_of("42,Ann,Lee,ann@example.com,no"), "an edited line is a new message");
}

// ---------------------------------------------------------------------------------------------------------------
// Shopify orders

const SHOPIFY_ORDERS: &str = "\
Name,Email,Financial Status,Paid at,Fulfillment Status,Fulfilled at,Accepts Marketing,Currency,Subtotal,Shipping,\
Taxes,Total,Discount Code,Discount Amount,Shipping Method,Created at,Lineitem quantity,Lineitem name,Lineitem price,\
Lineitem compare at price,Lineitem sku,Lineitem requires shipping,Lineitem taxable,Lineitem fulfillment status,\
Billing Name,Billing Phone,Notes,Cancelled at,Payment Method,Refunded Amount,Vendor,Id
#1001,Yuki.Tanaka@example.jp,paid,2024-03-05 14:22:15 +0900,fulfilled,2024-03-06 10:00:00 +0900,yes,JPY,9000,800,\
900,10700,SPRING10,1000,Standard,2024-03-05 14:22:10 +0900,2,Organic Cotton Tee - White / M,3500,,TEE-WHT-M,true,\
true,fulfilled,Yuki Tanaka,'+819012345678,,,Shopify Payments,0.00,Kizuna Apparel,5540123456789
#1001,Yuki.Tanaka@example.jp,,,,,,,,,,,,,,2024-03-05 14:22:10 +0900,1,Canvas Tote,3000,,TOTE-NAT,true,true,\
fulfilled,,,,,,,Kizuna Goods,
#1002,sam@example.com,partially_refunded,2024-04-01 09:15:02 -0500,fulfilled,,no,USD,54.00,5.00,4.32,63.32,,0.00,\
Ground,2024-04-01 09:15:00 -0500,2,Trail Socks,12.00,14.00,SOCK-TRL,true,true,fulfilled,Sam Lee,,\"Leave at the
back door, please\",,Shopify Payments,25.00,Kizuna Apparel,5540123456790
#1002,sam@example.com,,,,,,,,,,,,,,2024-04-01 09:15:00 -0500,1,Rain Shell,30.00,,SHELL-BLK-L,true,true,fulfilled,,,\
,,,,Kizuna Apparel,
#1003,kai@example.com,voided,,unfulfilled,,no,USD,20.00,0.00,0.00,20.00,,0.00,,2024-04-02 08:00:00 +0000,1,\
Beanie,20.00,,BEANIE-GRY,true,true,pending,Kai Wong,,,2024-04-02 09:30:00 +0000,manual,0.00,Kizuna Apparel,5540123456791
#1004,lena@example.com,paid,,fulfilled,,no,EUR,40.00,0.00,0.00,40.00,,0.00,,2024-04-03 12:00:00 +0200,1,Cap,15.00,,\
CAP-1,true,true,fulfilled,Lena Berg,,,,,0.00,Kizuna Goods,5540123456792
#1004,lena@example.com,,,,,,,,,,,,,,2024-04-03 12:00:00 +0200,1,Scarf,twenty-five,,SCARF-1,true,true,fulfilled,,,,,,\
,Kizuna Goods,
#1005,,paid,,fulfilled,,no,USD,10.00,0.00,0.00,10.00,,0.00,,2024-04-04 12:00:00 +0000,1,Sticker,10.00,,STK-1,true,\
true,fulfilled,Walk In,+1 555 010 3000,,,,0.00,Kizuna Goods,5540123456793
";

#[test]
fn shopify_orders_group_lines_into_one_order() {
    let results = run(ImportKind::Orders, SHOPIFY_ORDERS);
    let ok = ok_records(&results);
    assert_eq!(ok.iter().map(|r| r.line).collect::<Vec<_>>(), vec![2, 4, 7, 10]);

    let order = messages(ok[0]);
    assert_eq!(order.len(), 1, "no refund for #1001");
    let m = order[0];
    assert_eq!(m["type"], "track");
    assert_eq!(m["event"], "Order Completed");
    assert_eq!(m["messageId"], "import:order:#1001:completed");
    assert_eq!(m["timestamp"], "2024-03-05T05:22:10Z", "+0900 converted to UTC");
    assert!(m.get("userId").is_none());
    assert_eq!(m["anonymousId"], "import:email:yuki.tanaka@example.jp");
    assert_eq!(m["context"]["traits"]["email"], "yuki.tanaka@example.jp");
    assert_eq!(m["context"]["library"]["name"], "kizuna-import");
    assert_eq!(
        m["properties"],
        json!({
            "order_id": "#1001",
            "total": 10700.0,
            "revenue": 9000.0,
            "subtotal": 9000.0,
            "shipping": 800.0,
            "tax": 900.0,
            "discount": 1000.0,
            "coupon": "SPRING10",
            "currency": "JPY",
            "financial_status": "paid",
            "fulfillment_status": "fulfilled",
            "products": [
                {"sku": "TEE-WHT-M", "name": "Organic Cotton Tee - White / M", "price": 3500.0, "quantity": 2,
                 "brand": "Kizuna Apparel"},
                {"sku": "TOTE-NAT", "name": "Canvas Tote", "price": 3000.0, "quantity": 1, "brand": "Kizuna Goods"}
            ]
        })
    );

    // Walk-in order without email: identified by the billing phone.
    let walk_in = messages(ok[3])[0];
    assert_eq!(walk_in["anonymousId"], "import:phone:+15550103000");
}

#[test]
fn shopify_refunds_and_cancellations() {
    let results = run(ImportKind::Orders, SHOPIFY_ORDERS);
    let ok = ok_records(&results);

    // #1002 starts on line 4; its quoted note spans lines 4-5, so its second line item is on line 6.
    let refunded = messages(ok[1]);
    assert_eq!(refunded.len(), 2);
    assert_eq!(refunded[0]["event"], "Order Completed");
    assert_eq!(refunded[0]["timestamp"], "2024-04-01T14:15:00Z", "-0500 converted to UTC");
    assert_eq!(refunded[0]["properties"]["products"].as_array().unwrap().len(), 2);
    assert_eq!(refunded[1]["event"], "Order Refunded");
    assert_eq!(refunded[1]["messageId"], "import:order:#1002:refunded");
    assert_eq!(refunded[1]["timestamp"], "2024-04-01T14:15:01Z", "one second after the order");
    assert_eq!(refunded[1]["properties"], json!({"order_id": "#1002", "total": 25.0, "currency": "USD"}));
    assert_eq!(refunded[1]["anonymousId"], "import:email:sam@example.com");

    let cancelled = messages(ok[2]);
    assert_eq!(cancelled.len(), 1, "cancelled orders are not completed");
    assert_eq!(cancelled[0]["event"], "Order Cancelled");
    assert_eq!(cancelled[0]["messageId"], "import:order:#1003:cancelled");
    assert_eq!(cancelled[0]["timestamp"], "2024-04-02T09:30:00Z");
    assert_eq!(cancelled[0]["properties"]["total"], 20.0);
}

#[test]
fn a_bad_line_fails_its_whole_order_at_the_first_line() {
    let results = run(ImportKind::Orders, SHOPIFY_ORDERS);
    let errs = errors(&results);
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].line, 8, "#1004 starts on line 8");
    assert_eq!(errs[0].reason, "Lineitem price: 'twenty-five' is not a number (on line 9, part of order #1004)");
    // Orders before and after still come through, in file order.
    assert_eq!(results.len(), 5);
    assert!(results[3].is_err());
    assert_eq!(results[4].as_ref().unwrap().line, 10);
}

#[test]
fn parsing_twice_gives_identical_output() {
    for (kind, csv) in [
        (ImportKind::Orders, SHOPIFY_ORDERS),
        (ImportKind::Customers, SHOPIFY_CUSTOMERS),
        (ImportKind::Products, SHOPIFY_PRODUCTS),
        (ImportKind::Orders, GENERIC_ORDERS),
        (ImportKind::Customers, GENERIC_CUSTOMERS),
    ] {
        let first = run(kind, csv);
        let second = run(kind, csv);
        assert_eq!(first, second, "{kind}");
        let ids: Vec<_> = all_messages(&first).iter().map(|m| m["messageId"].as_str().unwrap().to_owned()).collect();
        let mut unique = ids.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(ids.len(), unique.len(), "messageIds are unique within a file: {ids:?}");
    }
}

#[test]
fn shopify_order_errors_name_the_column() {
    let header = "Name,Email,Currency,Subtotal,Total,Created at,Lineitem quantity,Lineitem name,Lineitem price\n";
    let csv = format!(
        "{header}\
#1,a@example.com,USD,10,10,2024-13-99 10:00:00 +0000,1,Tee,10
#2,b@example.com,USD,10,10,2024-01-02 10:00:00 +0000,0,Tee,10
#3,,USD,10,10,2024-01-02 10:00:00 +0000,1,Tee,10
#4,d@example.com,USD,10,10,2024-01-02 10:00:00 +0000,1,Tee,10
#4,d@example.com,USD,10,10,2024-01-03 10:00:00 +0000,1,Mug,10
#5,e@example.com,USD,10,10,2024-01-02 10:00:00 +0000,1,Tee,10
#6,f@example.com,USD,10,10,2024-01-02,1,Tee,10
#5,e@example.com,USD,10,10,2024-01-02 10:00:00 +0000,1,Tee,10
"
    );
    let results = run(ImportKind::Orders, &csv);
    let errs: Vec<_> = errors(&results).into_iter().map(ToString::to_string).collect();
    assert_eq!(
        errs,
        vec![
            "line 2: Created at: cannot parse '2024-13-99 10:00:00 +0000' as a date",
            "line 3: Lineitem quantity: '0' is not a positive integer",
            "line 4: missing identifier: Email and Phone are both empty",
            "line 5: Created at: '2024-01-03 10:00:00 +0000' differs from '2024-01-02 10:00:00 +0000' on line 5 of \
             the same order (on line 6, part of order #4)",
            "line 9: Name '#5' already appeared on line 7: all lines of one order must be consecutive",
        ]
    );
    let ok = ok_records(&results);
    assert_eq!(ok.len(), 2);
    assert_eq!(messages(ok[1])[0]["timestamp"], "2024-01-02T00:00:00Z");
}

#[test]
fn shopify_orders_with_customer_id_use_the_customer_user_id() {
    let csv = "\
Name,Email,Customer ID,Currency,Total,Created at,Lineitem quantity,Lineitem name,Lineitem price
#7,ann@example.com,'42,USD,10,2024-01-02T10:00:00Z,1,Tee,10
";
    let msgs = all_messages(&run(ImportKind::Orders, csv));
    assert_eq!(msgs[0]["userId"], "shopify:42");
    assert!(msgs[0].get("anonymousId").is_none());
    assert_eq!(msgs[0]["context"]["traits"]["email"], "ann@example.com");
    // Subtotal missing: derived from the line items.
    assert_eq!(msgs[0]["properties"]["subtotal"], 10.0);
}

// ---------------------------------------------------------------------------------------------------------------
// Shopify products

const SHOPIFY_PRODUCTS: &str = "\
Handle,Title,Body (HTML),Vendor,Product Category,Type,Tags,Published,Option1 Name,Option1 Value,Variant SKU,\
Variant Grams,Variant Inventory Tracker,Variant Inventory Qty,Variant Inventory Policy,Variant Fulfillment Service,\
Variant Price,Variant Compare At Price,Variant Requires Shipping,Image Src,Image Position,Variant Image,Status
organic-cotton-tee,Organic Cotton Tee,\"<p>Soft, breathable.</p>
<p>Made in Japan.</p>\",Kizuna Apparel,Apparel & Accessories > Clothing > Shirts & Tops,T-Shirts,\"organic, summer\",\
TRUE,Size,S,TEE-WHT-S,180,shopify,0,deny,manual,35.00,42.00,TRUE,https://cdn.example.com/tee-front.jpg,1,,active
organic-cotton-tee,,,,,,,,,M,TEE-WHT-M,180,shopify,12,deny,manual,35.00,42.00,TRUE,https://cdn.example.com/tee-back.jpg,2,,
organic-cotton-tee,,,,,,,,,,,,,,,,,,,https://cdn.example.com/tee-detail.jpg,3,,
canvas-tote,Canvas Tote,<p>Roomy.</p>,Kizuna Goods,,Bags,,TRUE,Title,Default Title,TOTE-NAT,400,shopify,0,deny,\
manual,30.00,,TRUE,,,,active
gift-card,Gift Card,,Kizuna,,Gift Cards,,TRUE,Title,Default Title,,,,,deny,manual,50.00,,FALSE,,,,active
winter-beanie,Winter Beanie,,Kizuna Apparel,,Hats,,FALSE,Title,Default Title,BEANIE-GRY,100,shopify,5,deny,manual,\
20.00,,TRUE,,,,draft
broken-mug,Broken Mug,,Kizuna Goods,,Mugs,,TRUE,Title,Default Title,MUG-1,300,shopify,5,deny,manual,twelve,,TRUE,,,,active
";

#[test]
fn shopify_products_one_per_handle() {
    let results = run(ImportKind::Products, SHOPIFY_PRODUCTS);
    let ok = ok_records(&results);
    assert_eq!(ok.iter().map(|r| r.line).collect::<Vec<_>>(), vec![2, 6, 7, 8]);

    let tee = product(ok[0]);
    assert_eq!(
        *tee,
        kizuna_catalog::Product {
            id: "organic-cotton-tee".into(),
            sku: Some("TEE-WHT-S".into()),
            title: "Organic Cotton Tee".into(),
            url: Some("/products/organic-cotton-tee".into()),
            image: Some("https://cdn.example.com/tee-front.jpg".into()),
            price: 35.0,
            currency: "USD".into(),
            compare_at_price: Some(42.0),
            categories: vec![
                "Apparel & Accessories".into(),
                "Clothing".into(),
                "Shirts & Tops".into(),
                "T-Shirts".into()
            ],
            brand: Some("Kizuna Apparel".into()),
            tags: vec!["organic".into(), "summer".into()],
            in_stock: true, // the M variant has stock
            created_at: None,
        }
    );
    let tote = product(ok[1]);
    assert!(!tote.in_stock, "the only variant has 0 in stock");
    assert_eq!(tote.categories, vec!["Bags".to_owned()]);
    assert_eq!(tote.image, None);
    let gift = product(ok[2]);
    assert!(gift.in_stock, "untracked inventory counts as in stock");
    assert_eq!(gift.sku, None);
    let beanie = product(ok[3]);
    assert!(!beanie.in_stock, "draft products are not for sale");

    let errs = errors(&results);
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].to_string(), "line 9: Variant Price: 'twelve' is not a number");
}

#[test]
fn product_currency_option_and_validation() {
    let csv = "Handle,Title,Variant Price\nmug,Mug,12.5\n,Orphan,3\nplate,,4\n";
    let results: Vec<_> =
        parse_with_options(ImportKind::Products, csv.as_bytes(), ImportOptions { currency: "eur".into() })
            .unwrap()
            .collect();
    assert_eq!(product(results[0].as_ref().unwrap()).currency, "EUR");
    assert_eq!(results[1].as_ref().unwrap_err().to_string(), "line 3: Handle: missing");
    assert_eq!(results[2].as_ref().unwrap_err().to_string(), "line 4: Title: must not be empty");
}

// ---------------------------------------------------------------------------------------------------------------
// Generic format

const GENERIC_CUSTOMERS: &str = "\
user_id,email,phone,first_name,last_name,birthday,city,region,country,email_marketing,sms_marketing,created_at,\
loyalty_tier
u-1,Ann@Example.com,+819011112222,Ann,Mori,1990-07-14,Kyoto,Kyoto,JP,yes,no,2023-01-05 10:00:00 +0900,gold
,bob@example.com,,Bob,,,,,,,,,
,,+15550104000,,,,,,,,,,
,,,Nobody,,,,,,,,,silver
u-5,e@example.com,,,,1990-02-30,,,,,,,
u-6,f@example.com,,,,,,,,,,yesterday,
";

#[test]
fn generic_customers() {
    let importer = parse(ImportKind::Customers, GENERIC_CUSTOMERS.as_bytes()).unwrap();
    assert_eq!(importer.format(), Format::Generic);
    let results: Vec<_> = importer.collect();
    let msgs = all_messages(&results);
    assert_eq!(msgs.len(), 3);
    assert_eq!(msgs[0]["userId"], "u-1");
    assert_eq!(
        msgs[0]["traits"],
        json!({
            "email": "ann@example.com",
            "phone": "+819011112222",
            "first_name": "Ann",
            "last_name": "Mori",
            "birthday": "1990-07-14",
            "address": {"city": "Kyoto", "state": "Kyoto", "country": "JP"},
            "consent": {"email": {"marketing": "granted"}, "sms": {"marketing": "denied"}},
            "created_at": "2023-01-05T01:00:00Z",
            "loyalty_tier": "gold"
        })
    );
    assert_eq!(msgs[1]["anonymousId"], "import:email:bob@example.com");
    assert_eq!(msgs[2]["anonymousId"], "import:phone:+15550104000");
    assert!(msgs[2]["messageId"].as_str().unwrap().starts_with("import:customer:+15550104000:"));

    let errs: Vec<_> = errors(&results).into_iter().map(ToString::to_string).collect();
    assert_eq!(
        errs,
        vec![
            "line 5: missing identifier: user_id, email and phone are all empty",
            "line 6: birthday: cannot parse '1990-02-30' as a date (expected YYYY-MM-DD)",
            "line 7: created_at: cannot parse 'yesterday' as a date",
        ]
    );
}

const GENERIC_ORDERS: &str = "\
order_id,user_id,email,created_at,currency,product_id,sku,name,category,brand,price,quantity,discount,shipping,tax,\
coupon,status
A-1,u-1,ann@example.com,2024-05-01T10:00:00+09:00,JPY,p-1,TEE-1,Tee,Tops,Kizuna,3000,2,500,600,550,WELCOME,
A-1,,,,,p-2,MUG-1,Mug,Kitchen,Kizuna,1500,,,,,,
A-2,,bob@example.com,2024-05-02 08:00:00,,p-3,CAP-1,Cap,Hats,,20.00,1,,,,,refunded
A-3,u-3,,2024-05-03,USD,p-4,,Scarf,,,25,1,,,,,cancelled
A-4,u-4,,2024-05-04,USD,p-5,,Sock,,,5,-1,,,,,
A-4,u-4,,2024-05-04,USD,p-6,,Hat,,,5,1,,,,,
A-5,u-5,,2024-05-05,USD,p-7,,Pin,,,5,1,10,,,,
A-6,u-6,,2024-05-06,USD,p-8,,Pen,,,5,1,,,,,shipped
A-7,,,2024-05-07,USD,p-9,,Pad,,,5,1,,,,,
";

#[test]
fn generic_orders() {
    let importer = parse(ImportKind::Orders, GENERIC_ORDERS.as_bytes()).unwrap();
    assert_eq!(importer.format(), Format::Generic);
    let results: Vec<_> = importer.collect();
    let ok = ok_records(&results);
    assert_eq!(ok.iter().map(|r| r.line).collect::<Vec<_>>(), vec![2, 4, 5]);

    let a1 = messages(ok[0]);
    assert_eq!(a1.len(), 1);
    assert_eq!(a1[0]["userId"], "u-1");
    assert_eq!(a1[0]["context"]["traits"]["email"], "ann@example.com");
    assert_eq!(a1[0]["timestamp"], "2024-05-01T01:00:00Z");
    assert_eq!(
        a1[0]["properties"],
        json!({
            "order_id": "A-1",
            "total": 8150.0,
            "revenue": 7000.0,
            "subtotal": 7000.0,
            "shipping": 600.0,
            "tax": 550.0,
            "discount": 500.0,
            "coupon": "WELCOME",
            "currency": "JPY",
            "products": [
                {"product_id": "p-1", "sku": "TEE-1", "name": "Tee", "category": "Tops", "brand": "Kizuna",
                 "price": 3000.0, "quantity": 2},
                {"product_id": "p-2", "sku": "MUG-1", "name": "Mug", "category": "Kitchen", "brand": "Kizuna",
                 "price": 1500.0, "quantity": 1}
            ]
        })
    );

    let a2 = messages(ok[1]);
    assert_eq!(
        a2.iter().map(|m| m["event"].as_str().unwrap()).collect::<Vec<_>>(),
        ["Order Completed", "Order Refunded"]
    );
    assert_eq!(a2[0]["anonymousId"], "import:email:bob@example.com");
    assert_eq!(a2[0]["properties"]["currency"], "USD", "default currency");
    assert_eq!(a2[1]["properties"], json!({"order_id": "A-2", "total": 20.0, "currency": "USD"}));
    assert_eq!(a2[1]["timestamp"], "2024-05-02T08:00:01Z");

    let a3 = messages(ok[2]);
    assert_eq!(a3.len(), 1);
    assert_eq!(a3[0]["event"], "Order Cancelled");
    assert_eq!(a3[0]["messageId"], "import:order:A-3:cancelled");

    let errs: Vec<_> = errors(&results).into_iter().map(ToString::to_string).collect();
    assert_eq!(
        errs,
        vec![
            "line 6: quantity: '-1' is not a positive integer",
            "line 8: discount: 10 is more than the order's line items total 5",
            "line 9: status: expected completed, refunded or cancelled, got 'shipped'",
            "line 10: missing identifier: user_id and email are both empty",
        ]
    );
}

#[test]
fn generic_products() {
    let csv = "\
id,sku,title,url,image,price,currency,compare_at_price,categories,brand,tags,in_stock,created_at
p-1,TEE-1,Organic Tee,https://shop.example.com/tee,https://cdn.example.com/tee.jpg,35,usd,42,Apparel|Tops| T-Shirts ,\
Kizuna,organic|summer,yes,2024-01-01T00:00:00+09:00
p-2,,Mug,,,12.5,,,,,,no,
p-3,,Plate,,,abc,,,,,,,
p-4,,Bowl,,,8,US,,,,,,
p-5,,Spoon,,,,,,,,,,
p-6,,Fork,,,2,,,,,,sometimes,
";
    let results = run(ImportKind::Products, csv);
    let ok = ok_records(&results);
    assert_eq!(
        *product(ok[0]),
        kizuna_catalog::Product {
            id: "p-1".into(),
            sku: Some("TEE-1".into()),
            title: "Organic Tee".into(),
            url: Some("https://shop.example.com/tee".into()),
            image: Some("https://cdn.example.com/tee.jpg".into()),
            price: 35.0,
            currency: "USD".into(),
            compare_at_price: Some(42.0),
            categories: vec!["Apparel".into(), "Tops".into(), "T-Shirts".into()],
            brand: Some("Kizuna".into()),
            tags: vec!["organic".into(), "summer".into()],
            in_stock: true,
            created_at: Some("2023-12-31T15:00:00Z".parse().unwrap()),
        }
    );
    let mug = product(ok[1]);
    assert!(!mug.in_stock);
    assert_eq!(mug.currency, "USD");
    let errs: Vec<_> = errors(&results).into_iter().map(ToString::to_string).collect();
    assert_eq!(
        errs,
        vec![
            "line 4: price: 'abc' is not a number",
            "line 5: currency: must be an ISO 4217 code such as USD or JPY",
            "line 6: price: missing",
            "line 7: in_stock: expected yes/no or true/false, got 'sometimes'",
        ]
    );
}

// ---------------------------------------------------------------------------------------------------------------
// Headers and CSV-level problems

#[test]
fn unknown_headers_are_rejected_at_line_1() {
    for kind in ImportKind::ALL {
        let err = parse(kind, "foo,bar,baz\n1,2,3\n".as_bytes()).err().expect("unknown header");
        assert_eq!(err.line, 1);
        assert!(err.reason.contains("unrecognised"), "{}", err.reason);
        assert!(err.reason.contains("foo, bar, baz"), "lists what it found: {}", err.reason);
        assert!(err.reason.contains("Shopify"), "{}", err.reason);
    }
    let err = parse(ImportKind::Orders, "order_id,email,price\n".as_bytes()).err().unwrap();
    assert_eq!(
        err.reason,
        "this looks like a generic orders file but is missing column(s) created_at; it needs at least order_id, \
         created_at, price"
    );
    let err = parse(ImportKind::Orders, "Name,Email,Lineitem name,Lineitem price\n".as_bytes()).err().unwrap();
    assert!(err.reason.contains("missing column(s) Created at, Lineitem quantity"), "{}", err.reason);
    let err = parse(ImportKind::Products, SHOPIFY_ORDERS.as_bytes()).err().unwrap();
    assert_eq!(err.reason, "this looks like a Shopify orders export, not products: import it as orders");
    let err = parse(ImportKind::Customers, SHOPIFY_PRODUCTS.as_bytes()).err().unwrap();
    assert_eq!(err.reason, "this looks like a Shopify products export, not customers: import it as products");
    let err = parse(ImportKind::Customers, SHOPIFY_ORDERS.as_bytes()).err().unwrap();
    assert_eq!(err.reason, "this looks like a Shopify orders export, not customers: import it as orders");
    let err = parse(ImportKind::Orders, SHOPIFY_CUSTOMERS.as_bytes()).err().unwrap();
    assert_eq!(err.reason, "this looks like a Shopify customers export, not orders: import it as customers");
    let err = parse(ImportKind::Customers, "".as_bytes()).err().unwrap();
    assert!(err.to_string().starts_with("line 1: the file is empty"), "{err}");
    let err = parse(ImportKind::Customers, "email,Email\n".as_bytes()).err().unwrap();
    assert_eq!(err.reason, "column 'Email' appears more than once in the header");
}

#[test]
fn bom_blank_rows_and_crlf_line_endings() {
    let csv = "\u{feff}Email,First Name\r\nann@example.com,Ann\r\n,\r\n\r\nbob@example.com,Bob\r\n";
    let results = run(ImportKind::Customers, csv);
    let ok = ok_records(&results);
    assert_eq!(ok.iter().map(|r| r.line).collect::<Vec<_>>(), vec![2, 5]);
    assert!(errors(&results).is_empty());
}

#[test]
fn invalid_utf8_is_reported_and_parsing_continues() {
    let mut csv = b"email,first_name\nann@example.com,Ann\nbob@example.com,B".to_vec();
    csv.extend_from_slice(&[0xff, 0xfe]);
    csv.extend_from_slice(b"\ncid@example.com,Cid\n");
    let results: Vec<_> = parse(ImportKind::Customers, csv.as_slice()).unwrap().collect();
    assert_eq!(results.len(), 3);
    assert_eq!(
        results[1].as_ref().unwrap_err().to_string(),
        "line 3: first_name: text is not valid UTF-8 (save the file as UTF-8 CSV)"
    );
    assert_eq!(results[2].as_ref().unwrap().line, 4);
}

#[test]
fn invalid_utf8_inside_an_order_fails_the_order() {
    let mut csv =
        b"order_id,email,created_at,price\nA,a@example.com,2024-01-01,1\nA,a@example.com,2024-01-01,1 ".to_vec();
    csv.push(0xff);
    csv.extend_from_slice(b"\nB,b@example.com,2024-01-01,1\n");
    let results: Vec<_> = parse(ImportKind::Orders, csv.as_slice()).unwrap().collect();
    assert_eq!(results.len(), 2, "{results:?}");
    assert_eq!(
        results[0].as_ref().unwrap_err().to_string(),
        "line 2: price: text is not valid UTF-8 (save the file as UTF-8 CSV) (on line 3, part of order A)"
    );
    assert_eq!(results[1].as_ref().unwrap().line, 4);
}

#[test]
fn kinds_and_doc() {
    assert_eq!("Orders".parse::<ImportKind>(), Ok(ImportKind::Orders));
    assert!("invoices".parse::<ImportKind>().is_err());
    assert_eq!(ImportKind::Products.to_string(), "products");
    let doc = generic_format_doc();
    for col in customers::GENERIC_COLUMNS.iter().chain(&orders::GENERIC_COLUMNS).chain(&products::GENERIC_COLUMNS) {
        assert!(doc.contains(&format!("`{col}`")), "doc describes {col}");
    }
}

#[test]
fn overlong_message_ids_are_shortened() {
    let long_id = "X".repeat(300);
    let csv = format!("order_id,email,created_at,price\n{long_id},a@example.com,2024-01-01,1\n");
    let msgs = all_messages(&run(ImportKind::Orders, &csv));
    let id = msgs[0]["messageId"].as_str().unwrap();
    assert!(id.starts_with("import:order:sha256-") && id.ends_with(":completed"), "{id}");
    assert!(id.len() <= 256);
    assert_eq!(msgs[0]["properties"]["order_id"], long_id.as_str());
}
