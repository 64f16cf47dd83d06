//! Templates render what a brand wrote for each recipient: fallbacks for missing data, money and dates in the
//! recipient's conventions, recommendation blocks from a placement, and precise errors on save.

use kizuna_messaging::line::Carousel;
use kizuna_messaging::model::Purpose;
use kizuna_messaging::{
    Content, Deferred, PickRequest, ProductPicker, RenderContext, Rendered, Renderer, TemplateDefinition,
};
use parking_lot_free::Recorded;
use serde_json::{Value, json};
use std::sync::Arc;

mod parking_lot_free {
    use std::sync::Mutex;
    /// The requests a fake picker saw.
    #[derive(Default)]
    pub struct Recorded(pub Mutex<Vec<(String, super::PickRequest)>>);
}

struct FakePicker {
    seen: Arc<Recorded>,
}

impl ProductPicker for FakePicker {
    fn pick(&self, placement: &str, request: &PickRequest) -> Result<Vec<Value>, String> {
        if let Ok(mut seen) = self.seen.0.lock() {
            seen.push((placement.to_owned(), request.clone()));
        }
        if placement == "broken" {
            return Err("engine down".into());
        }
        Ok((1..=10)
            .map(|i| json!({"id": format!("p{i}"), "name": format!("Tea {i}"), "price": 1000 * i,
                             "url": format!("https://shop.example/p{i}"), "image_url": format!("https://cdn.example/p{i}.jpg")}))
            .collect())
    }
}

fn renderer() -> (Renderer, Arc<Recorded>) {
    let seen = Arc::new(Recorded::default());
    (Renderer::new(Arc::new(FakePicker { seen: seen.clone() })), seen)
}

fn email(subject: &str, html: &str, text: Option<&str>) -> TemplateDefinition {
    TemplateDefinition {
        description: String::new(),
        purpose: Purpose::Marketing,
        topic: None,
        content: Content::Email {
            subject: subject.into(),
            preheader: None,
            html: html.into(),
            text: text.map(Into::into),
        },
    }
}

fn context() -> RenderContext {
    RenderContext {
        profile: json!({"id": "42", "first_name": "Aiko", "computed": {"orders": 3}}),
        event: json!({"name": "Checkout Started", "timestamp": "2026-11-30T14:30:00Z",
                      "properties": {"value": 4980, "products": [{"product_id": "cart-1"}, {"product_id": "cart-2"}]}}),
        store: json!({"name": "Kyoto Tea", "currency": "JPY", "locale": "ja-JP", "timezone": "Asia/Tokyo"}),
        recipient: json!({"timezone": "Asia/Tokyo", "locale": "ja-JP"}),
        message: json!({"id": "m1", "unsubscribe_url": "https://crm.example/t/u/x"}),
        now: "2026-11-30T15:00:00Z".into(),
        profile_computed: None,
    }
}

fn render_email(renderer: &Renderer, def: &TemplateDefinition, ctx: &RenderContext) -> (String, String, String) {
    let compiled = renderer.compile(def).expect("compiles");
    match renderer.render(&compiled, ctx.clone()).expect("renders") {
        Rendered::Email { subject, html, text, .. } => (subject, html, text),
        other => panic!("not an email: {other:?}"),
    }
}

#[test]
fn missing_variables_fall_back_instead_of_failing() {
    let (renderer, _) = renderer();
    let def = email(
        "Hi {{ profile.first_name | default: \"there\" }}",
        "<p>{{ profile.nickname | default: \"friend\" }}|{{ profile.address.city }}|{{ nothing.at.all }}|{% if profile.vip %}VIP{% endif %}</p>\
         {% for item in event.properties.products %}[{{ item.name | default: item.product_id }}]{% endfor %}",
        None,
    );
    let mut ctx = context();
    let (subject, html, _) = render_email(&renderer, &def, &ctx);
    assert_eq!(subject, "Hi Aiko");
    assert_eq!(html, "<p>friend|||</p>[cart-1][cart-2]", "products without a name fall back inside loops too");
    ctx.profile = json!({"id": "7"});
    let (subject, _, _) = render_email(&renderer, &def, &ctx);
    assert_eq!(subject, "Hi there");
}

#[test]
fn money_and_dates_follow_the_recipient() {
    let (renderer, _) = renderer();
    let def = email(
        "x",
        "{{ event.properties.value | money }} {{ 12.5 | money: \"USD\" }} {{ event.timestamp | local_date: \"%Y-%m-%d %H:%M\" }} {{ profile.missing | money }}",
        None,
    );
    let mut ctx = context();
    let (_, html, _) = render_email(&renderer, &def, &ctx);
    assert_eq!(html, "¥4,980 $12.50 2026-11-30 23:30 ");
    ctx.recipient = json!({"timezone": "America/New_York", "locale": "de-DE"});
    ctx.store["currency"] = json!("EUR");
    let (_, html, _) = render_email(&renderer, &def, &ctx);
    assert_eq!(html, "4.980,00\u{a0}€ 12,50\u{a0}$ 2026-11-30 09:30 ");
}

#[test]
fn recommend_tag_fills_a_block_from_the_placement_with_the_cart_as_context() {
    let (renderer, seen) = renderer();
    let def = email(
        "x",
        "{% recommend placement: \"cart_cross_sell\", limit: 3 %}{% for p in recommendations %}[{{ p.name }} {{ p.price | money }} {{ p.brand | default: \"-\" }}]{% endfor %}\
         {% recommend placement: \"broken\", as: \"none\" %}{% if none.size == 0 %}(empty){% endif %}",
        None,
    );
    let (_, html, text) = render_email(&renderer, &def, &context());
    assert_eq!(html, "[Tea 1 ¥1,000 -][Tea 2 ¥2,000 -][Tea 3 ¥3,000 -](empty)");
    assert_eq!(text, html, "no markup: the generated text is the same");
    let seen = seen.0.lock().map(|s| s.clone()).unwrap_or_default();
    assert_eq!(seen[0].0, "cart_cross_sell");
    assert_eq!(
        seen[0].1,
        PickRequest { profile_id: Some(42), products: vec!["cart-1".into(), "cart-2".into()], limit: 3 }
    );
}

#[test]
fn plain_text_is_generated_when_missing_and_kept_when_given() {
    let (renderer, _) = renderer();
    let (_, _, text) = render_email(
        &renderer,
        &email("s", "<h1>Hi {{ profile.first_name }}</h1><p><a href=\"https://x.example\">Shop</a></p>", None),
        &context(),
    );
    assert_eq!(text, "Hi Aiko\n\nShop (https://x.example)");
    let (_, _, text) =
        render_email(&renderer, &email("s", "<p>x</p>", Some("Hello {{ profile.first_name }}")), &context());
    assert_eq!(text, "Hello Aiko");
}

#[test]
fn syntax_errors_name_the_part_line_and_column() {
    let (renderer, _) = renderer();
    let error =
        renderer.compile(&email("ok", "<p>line one</p>\n<p>{{ profile.first_name </p>", None)).err().expect("rejected");
    assert_eq!(error.field, "html");
    assert_eq!(error.line, 2, "{error}");
    assert!(error.column > 1, "{error}");
    let error = renderer.compile(&email("{% if x %}never closed", "<p/>", None)).err().expect("rejected");
    assert_eq!(error.field, "subject");
    let error = renderer.compile(&email("s", "{% recommend limit: 3 %}", None)).err().expect("rejected");
    assert!(error.message.contains("placement"), "{error}");
    let error = renderer.compile(&email("s", "{{ 1 | no_such_filter }}", None)).err().expect("rejected");
    assert!(error.message.to_lowercase().contains("filter"), "{error}");
    let error = renderer.compile(&email("  ", "<p/>", None)).err().expect("rejected");
    assert_eq!(error.field, "subject");
}

#[test]
fn line_text_and_a_flex_carousel_of_recommended_products() {
    let (renderer, _) = renderer();
    let def = TemplateDefinition {
        description: String::new(),
        purpose: Purpose::Marketing,
        topic: None,
        content: Content::Line {
            text: "{{ profile.first_name }}さん、おすすめです".into(),
            carousel: Some(Carousel {
                placement: "for_you".into(),
                limit: 2,
                button: "見る".into(),
                alt_text: "おすすめ".into(),
            }),
        },
    };
    let compiled = renderer.compile(&def).expect("compiles");
    let Rendered::Line { messages } = renderer.render(&compiled, context()).expect("renders") else { panic!("line") };
    assert_eq!(messages[0], json!({"type": "text", "text": "Aikoさん、おすすめです"}));
    assert_eq!(messages[1]["type"], "flex");
    assert_eq!(messages[1]["altText"], "おすすめ");
    let bubbles = messages[1]["contents"]["contents"].as_array().cloned().unwrap_or_default();
    assert_eq!(bubbles.len(), 2);
    assert_eq!(bubbles[0]["hero"]["url"], "https://cdn.example/p1.jpg");
    assert_eq!(bubbles[0]["body"]["contents"][1]["text"], "¥1,000");
    assert_eq!(bubbles[1]["footer"]["contents"][0]["action"]["uri"], "https://shop.example/p2");
}

#[test]
fn webhook_payloads_must_render_to_json() {
    let (renderer, _) = renderer();
    let def = |payload: &str| TemplateDefinition {
        description: String::new(),
        purpose: Purpose::Transactional,
        topic: None,
        content: Content::Webhook { payload: payload.into() },
    };
    let compiled = renderer
        .compile(&def("{\"name\": {{ profile.first_name | json }}, \"orders\": {{ profile.computed.orders }}}"))
        .expect("compiles");
    match renderer.render(&compiled, context()) {
        Ok(Rendered::Webhook { payload }) => assert_eq!(payload, json!({"name": "Aiko", "orders": 3})),
        other => panic!("{other:?}"),
    }
    let compiled = renderer.compile(&def("{\"name\": {{ profile.first_name }}}")).expect("compiles");
    let error = renderer.render(&compiled, context()).expect_err("not JSON");
    assert_eq!(error.part, "payload");
}

#[test]
fn computed_attributes_are_made_only_for_a_template_that_reads_them() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let (renderer, _) = renderer();
    let made = Arc::new(AtomicUsize::new(0));
    let context = || {
        let made = made.clone();
        RenderContext {
            profile_computed: Some(Deferred::new(move || {
                made.fetch_add(1, Ordering::SeqCst);
                json!({"orders_count": 7, "category_affinity": {"tea": 0.8}})
            })),
            ..context()
        }
    };
    let sms = |body: &str| TemplateDefinition {
        description: String::new(),
        purpose: Purpose::Marketing,
        topic: None,
        content: Content::Sms { body: body.into() },
    };
    let body = |rendered| match rendered {
        Ok(Rendered::Sms { body }) => body,
        other => panic!("not an SMS: {other:?}"),
    };
    let render = |source: &str| body(renderer.render(&renderer.compile(&sms(source)).expect("compiles"), context()));

    assert_eq!(render("Hi {{ profile.first_name }}"), "Hi Aiko");
    assert_eq!(made.load(Ordering::SeqCst), 0, "not read, not made");
    // Read: made once, and it replaces what the profile document had under the same key.
    assert_eq!(render("{{ profile.computed.orders_count }} {{ profile.computed.orders_count }}"), "7 7");
    assert_eq!(made.load(Ordering::SeqCst), 1);
    assert_eq!(render("{{ profile.computed.category_affinity.tea }} {{ profile.computed.missing.deeper }}."), "0.8 .");
    // The whole profile printed includes them, in key order.
    let printed = render("{{ profile | json }}");
    let value: serde_json::Value = serde_json::from_str(&printed).expect("JSON");
    assert_eq!(value["computed"]["orders_count"], 7);
    assert_eq!(value["first_name"], "Aiko");
    assert_eq!(made.load(Ordering::SeqCst), 3);
}
