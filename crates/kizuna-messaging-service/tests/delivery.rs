//! Messaging end to end below HTTP: the real store and ingest pipeline under a test clock, email through a real
//! SMTP server process (aiosmtpd) with the received MIME parsed by Python's `email` package, and LINE, SMS and
//! webhook providers as local HTTP fakes that check each request.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use chrono::{Duration, TimeZone, Utc};
use kizuna_identity::{IdKind, Identifier, ProfileId};
use kizuna_ingest::parse_message;
use kizuna_messaging::{PickRequest, ProductPicker, TemplateDefinition};
use kizuna_messaging_service::{
    LineSettings, MessagingError, MessagingSettings, Messenger, SendRequest, SmsSettings, SmtpSettings, SmtpTls,
    WebhookSettings, attribution_sink,
};
use kizuna_pipeline::{Pipeline, PipelineConfig};
use kizuna_profiles::DataKind;
use kizuna_store::messages::{MessageFilter, Transition};
use kizuna_store::{Durability, Source, SqliteStore, Store};
use kizuna_types::{Clock, TestClock};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};

use kizuna_testkit::SmtpSink;

struct ThreeTeas;

impl ProductPicker for ThreeTeas {
    fn pick(&self, _placement: &str, request: &PickRequest) -> Result<Vec<Value>, String> {
        Ok((1..=request.limit)
            .map(|i| {
                json!({"id": format!("t{i}"), "name": format!("Sencha {i}"), "price": 1200 * i as i64,
                             "url": format!("https://tea.example/p/t{i}")})
            })
            .collect())
    }
}

struct Node {
    _dir: tempfile::TempDir,
    store: Arc<dyn Store>,
    clock: TestClock,
    pipeline: Pipeline,
    source: Source,
    messenger: Messenger,
}

/// 2026-12-01 03:00 UTC: noon in Tokyo.
fn noon_tokyo() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 1, 3, 0, 0).single().expect("time")
}

impl Node {
    fn start(settings: MessagingSettings) -> Node {
        let dir = tempfile::tempdir().expect("temp dir");
        let clock = TestClock::at(noon_tokyo());
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path(), Durability::Process).expect("store"));
        let source = store.create_source("web", true, DataKind::FirstParty, clock.now()).expect("source");
        let messenger =
            Messenger::new(store.clone(), Arc::new(clock.clone()), settings, Arc::new(ThreeTeas)).expect("messenger");
        let pipeline = Pipeline::start_with_feed(
            store.clone(),
            PipelineConfig::default(),
            Arc::new(clock.clone()),
            Some(attribution_sink(&messenger, Box::new(|_| {}))),
        )
        .expect("pipeline");
        messenger.set_feedback(pipeline.clone(), source.clone());
        Node { _dir: dir, store, clock, pipeline, source, messenger }
    }

    async fn send(&self, message: Value) {
        let event = parse_message(message, self.clock.now()).expect("valid message");
        self.pipeline.ingest(&self.source, vec![event]).await.expect("ingest");
    }

    /// A customer who opted in to marketing email, in Tokyo.
    async fn customer(&self, user: &str, email: &str) -> u64 {
        self.send(json!({"type": "identify", "userId": user, "traits": {
            "email": email, "first_name": "Aiko", "timezone": "Asia/Tokyo",
            "phone": "+81 90-1234-5678", "line_user_id": format!("U{user}"),
            "consent": {"email": {"marketing": "granted"}, "sms": {"marketing": "granted"}, "line": {"marketing": "granted"}}}}))
            .await;
        self.store.profile_by_identifier(&Identifier::new(IdKind::UserId, user)).expect("lookup").expect("profile")
    }

    fn template(&self, name: &str, definition: Value) {
        let definition: TemplateDefinition = serde_json::from_value(definition).expect("definition");
        self.messenger.save_template(name, &definition).expect("saved");
    }

    fn request(&self, template: &str, profile: u64) -> SendRequest {
        serde_json::from_value(json!({"template": template, "profile_id": profile.to_string(),
            "event": {"name": "Checkout Started", "properties": {"products": [{"product_id": "cart-1"}]}}}))
        .expect("request")
    }

    fn state(&self, id: &str) -> String {
        self.store.messages().message(id).expect("read").expect("message").state
    }
}

fn email_settings(port: u16) -> MessagingSettings {
    MessagingSettings {
        public_url: "https://crm.tea.example".into(),
        store: json!({"name": "Kyoto Tea", "currency": "JPY", "locale": "ja-JP", "timezone": "Asia/Tokyo"}),
        email: Some(SmtpSettings {
            host: "127.0.0.1".into(),
            port,
            tls: SmtpTls::None,
            username: None,
            password: None,
            from: "Kyoto Tea <news@tea.example>".into(),
            reply_to: None,
            pool_size: 2,
            rate_per_second: 0.0,
            ca_file: None,
        }),
        ..MessagingSettings::default()
    }
}

fn cart_template() -> Value {
    json!({"channel": "email", "purpose": "marketing",
           "subject": "{{ profile.first_name | default: \"Hi\" }}, your cart is waiting",
           "preheader": "Still thinking?",
           "html": "<html><body><p>Hello {{ profile.first_name }}</p>{% recommend placement: \"cart_cross_sell\", limit: 3 %}\
                    <ul>{% for p in recommendations %}<li><a href=\"{{ p.url }}\">{{ p.name }}</a> {{ p.price | money }}</li>{% endfor %}</ul>\
                    <p><a href=\"{{ message.unsubscribe_url }}\">Unsubscribe</a></p></body></html>"})
}

fn token_after<'a>(text: &'a str, marker: &str) -> &'a str {
    let start = text.find(marker).map(|i| i + marker.len()).expect("marker present");
    let rest = &text[start..];
    let end = rest.find(|c: char| c == '"' || c == '>' || c.is_whitespace() || c == ')').unwrap_or(rest.len());
    &rest[..end]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_goes_through_a_real_smtp_server_with_tracking_unsubscribe_and_attribution() {
    let sink = SmtpSink::start();
    let node = Node::start(email_settings(sink.port));
    let aiko = node.customer("u1", "aiko@example.com").await;
    node.template("cart", cart_template());

    let mut request = node.request("cart", aiko);
    request.idempotency_key = Some("cart-flow:run-1".into());
    let queued = node.messenger.enqueue(std::slice::from_ref(&request)).expect("queued");
    assert!(queued[0].created);
    // The same key again is the same message.
    let again = node.messenger.enqueue(&[request]).expect("queued");
    assert_eq!((again[0].id.as_str(), again[0].created), (queued[0].id.as_str(), false));
    assert_eq!(node.messenger.process_due().await.expect("round"), 1);
    let id = queued[0].id.clone();
    assert_eq!(node.state(&id), "sent");

    let received = sink.received();
    assert_eq!(received.len(), 1, "exactly one email");
    let mail = &received[0];
    let headers = &mail["headers"];
    assert_eq!(mail["content_type"], "multipart/alternative");
    assert_eq!(headers["Subject"], "Aiko, your cart is waiting");
    assert_eq!(headers["To"], "aiko@example.com");
    assert_eq!(headers["From"], "Kyoto Tea <news@tea.example>");
    assert_eq!(headers["Message-ID"], format!("<{id}@tea.example>"));
    assert_eq!(headers["List-Unsubscribe-Post"], "List-Unsubscribe=One-Click");
    let unsubscribe = headers["List-Unsubscribe"].as_str().expect("List-Unsubscribe");
    assert!(unsubscribe.starts_with("<https://crm.tea.example/t/u/"), "{unsubscribe}");
    let html = mail["html"].as_str().expect("html part");
    let text = mail["text"].as_str().expect("text part");
    assert!(html.contains("Still thinking?"), "preheader in the body");
    for (i, price) in [(1, "¥1,200"), (2, "¥2,400"), (3, "¥3,600")] {
        assert!(html.contains(&format!("Sencha {i}</a> {price}")), "{html}");
        assert!(text.contains(&format!("Sencha {i}")), "{text}");
    }
    assert!(html.contains("https://crm.tea.example/t/o/"), "open pixel");
    assert!(!html.contains("https://tea.example/p/t1"), "product links are wrapped for click tracking");

    // A click redirects to where the message pointed; a tampered token is refused.
    let click = token_after(html, "https://crm.tea.example/t/c/");
    assert_eq!(node.messenger.click(click).await.expect("click"), "https://tea.example/p/t1");
    let mut tampered = click.to_owned();
    tampered.insert(3, 'x');
    assert!(matches!(node.messenger.click(&tampered).await, Err(MessagingError::BadToken)));
    let events = node.store.events(aiko, &Default::default()).expect("events");
    assert!(events.iter().any(|e| e.body["event"] == "Email Link Clicked"), "the click is a profile event");

    // An order two hours after the click is attributed to the message.
    node.clock.advance(Duration::hours(2));
    node.send(json!({"type": "track", "userId": "u1", "event": "Order Completed",
                     "properties": {"order_id": "o-1", "revenue": 3600, "currency": "JPY"}}))
        .await;
    let mut report = Vec::new();
    for _ in 0..100 {
        report = node.store.messages().report("template", node.clock.now() - Duration::days(1)).expect("report");
        if report.first().is_some_and(|r| r.orders == 1) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(report[0].key.as_deref(), Some("cart"));
    assert_eq!((report[0].sent, report[0].clicked, report[0].orders, report[0].revenue), (1, 1, 1, 3600.0));

    // One-click unsubscribe: the next marketing email is suppressed, never sent.
    let token = token_after(unsubscribe, "https://crm.tea.example/t/u/");
    node.messenger.unsubscribe(token, None).await.expect("unsubscribed");
    node.clock.advance(Duration::days(2));
    let next = node.messenger.enqueue(&[node.request("cart", aiko)]).expect("queued");
    node.messenger.process_due().await.expect("round");
    assert_eq!(node.state(&next[0].id), "suppressed");
    let log = node.store.messages().decisions(&next[0].id).expect("decisions");
    assert_eq!(log.last().map(|d| d.reason.as_str()), Some("suppressed: unsubscribe"), "{log:?}");
    let profile = node.store.profile(aiko).expect("read").expect("profile");
    assert_eq!(profile.state.consent["email"]["marketing"].status, kizuna_profiles::ConsentStatus::Denied);
    let events = node.store.events(aiko, &Default::default()).expect("events");
    assert!(events.iter().any(|e| e.body["event"] == "Unsubscribed"));
    assert_eq!(sink.received().len(), 1, "nothing more was sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_hours_defer_caps_hold_and_hard_bounces_suppress() {
    let sink = SmtpSink::start();
    let node = Node::start(email_settings(sink.port));
    let aiko = node.customer("u1", "aiko@example.com").await;
    let gone = node.customer("u2", "bounce@example.com").await;
    node.template("cart", cart_template());
    // 22:00 in Tokyo: deferred to 08:00 local.
    node.clock.set(noon_tokyo() + Duration::hours(10));
    let queued = node.messenger.enqueue(&[node.request("cart", aiko), node.request("cart", gone)]).expect("queued");
    node.messenger.process_due().await.expect("round");
    assert_eq!(node.state(&queued[0].id), "deferred");
    let message = node.store.messages().message(&queued[0].id).expect("read").expect("message");
    assert_eq!(message.due_at, noon_tokyo() + Duration::hours(20));
    assert_eq!(node.messenger.process_due().await.expect("round"), 0, "nothing due before the morning");
    node.clock.set(noon_tokyo() + Duration::hours(20));
    node.messenger.process_due().await.expect("round");
    assert_eq!(node.state(&queued[0].id), "sent");
    assert_eq!(node.state(&queued[1].id), "bounced");
    let suppressed = node.store.messages().suppression("email", "bounce@example.com").expect("read");
    assert_eq!(suppressed.map(|s| s.reason).as_deref(), Some("hard_bounce"));
    // A second marketing email within 16 hours waits for the cap.
    let second = node.messenger.enqueue(&[node.request("cart", aiko)]).expect("queued");
    node.messenger.process_due().await.expect("round");
    assert_eq!(node.state(&second[0].id), "deferred");
    let reason = node.store.messages().message(&second[0].id).expect("read").and_then(|m| m.reason).unwrap_or_default();
    assert!(reason.contains("frequency_cap"), "{reason}");
    assert_eq!(sink.received().len(), 1);
    let listed = node.store.messages().messages(&MessageFilter {
        state: Some("deferred".into()),
        limit: 10,
        ..Default::default()
    });
    assert_eq!(listed.expect("list").len(), 1);
}

#[derive(Clone, Default)]
struct Fake {
    requests: Arc<Mutex<Vec<(HeaderMap, String)>>>,
}

async fn record(
    State(fake): State<Fake>,
    headers: HeaderMap,
    body: String,
) -> (StatusCode, [(&'static str, &'static str); 1], String) {
    let mut requests = fake.requests.lock().expect("lock");
    let key = headers.get("x-line-retry-key").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let duplicate = key.is_some()
        && requests.iter().any(|(h, _)| h.get("x-line-retry-key").and_then(|v| v.to_str().ok()) == key.as_deref());
    requests.push((headers, body));
    if duplicate {
        return (StatusCode::CONFLICT, [("x-line-accepted-request-id", "req-1")], "{}".into());
    }
    (StatusCode::OK, [("x-line-request-id", "req-1")], json!({"sid": "SM123", "status": "queued"}).to_string())
}

async fn fake_provider() -> (String, Fake) {
    let fake = Fake::default();
    let app = Router::new()
        .route("/v2/bot/message/push", post(record))
        .route("/2010-04-01/Accounts/{sid}/Messages.json", post(record))
        .route("/hook", post(record))
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await.ok() });
    (url, fake)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn line_sms_and_webhooks_send_the_provider_request_shapes() {
    let (url, fake) = fake_provider().await;
    let node = Node::start(MessagingSettings {
        public_url: "https://crm.tea.example".into(),
        store: json!({"currency": "JPY", "locale": "ja-JP"}),
        sms: Some(SmsSettings {
            base_url: url.clone(),
            account_sid: "AC1".into(),
            auth_token: "tok".into(),
            from: "+15005550006".into(),
            stop_text: "STOP で配信停止".into(),
            rate_per_second: 0.0,
        }),
        line: Some(LineSettings {
            base_url: url.clone(),
            channel_access_token: "line-token".into(),
            rate_per_second: 0.0,
        }),
        webhook: Some(WebhookSettings { url: format!("{url}/hook"), secret: "whsec".into() }),
        ..MessagingSettings::default()
    });
    let aiko = node.customer("u1", "aiko@example.com").await;
    node.template("sms", json!({"channel": "sms", "body": "{{ profile.first_name }}: https://tea.example/cart"}));
    node.template(
        "line",
        json!({"channel": "line", "text": "{{ profile.first_name }}さん",
                                 "carousel": {"placement": "for_you", "limit": 2}}),
    );
    node.template("hook", json!({"channel": "webhook", "purpose": "transactional",
                                 "payload": "{\"profile\": {{ profile.id | json }}, \"event\": {{ event.name | json }}}"}));
    let queued = node
        .messenger
        .enqueue(&[node.request("sms", aiko), node.request("line", aiko), node.request("hook", aiko)])
        .expect("queued");
    node.messenger.process_due().await.expect("round");
    for q in &queued {
        assert_eq!(node.state(&q.id), "sent", "{}", q.id);
    }
    let requests = fake.requests.lock().expect("lock").clone();
    assert_eq!(requests.len(), 3);
    let find =
        |pred: &dyn Fn(&HeaderMap, &str) -> bool| requests.iter().find(|(h, b)| pred(h, b)).cloned().expect("request");
    let (headers, body) = find(&|h, _| h.contains_key("x-line-retry-key"));
    assert_eq!(headers["authorization"], "Bearer line-token");
    assert_eq!(headers["x-line-retry-key"], queued[1].id.as_str());
    let body: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(body["to"], "Uu1");
    assert_eq!(body["messages"][0], json!({"type": "text", "text": "Aikoさん"}));
    assert_eq!(body["messages"][1]["contents"]["contents"].as_array().map(Vec::len), Some(2));
    // The carousel's buttons go through click tracking to the product page.
    let uri = body["messages"][1]["contents"]["contents"][0]["footer"]["contents"][0]["action"]["uri"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let token = uri.strip_prefix("https://crm.tea.example/t/c/").expect("a tracked link");
    assert_eq!(node.messenger.click(token).await.expect("click"), "https://tea.example/p/t1");
    let (headers, body) = find(&|_, b| b.contains("Body="));
    assert!(headers["authorization"].to_str().unwrap_or_default().starts_with("Basic "));
    let form: Vec<(String, String)> = url_decode(&body);
    let field = |k: &str| form.iter().find(|(f, _)| f == k).map(|(_, v)| v.clone()).unwrap_or_default();
    assert_eq!(field("To"), "+819012345678");
    assert_eq!(field("From"), "+15005550006");
    assert!(field("Body").starts_with("Aiko: https://crm.tea.example/t/c/"), "{}", field("Body"));
    assert!(field("Body").ends_with("STOP で配信停止"));
    let (headers, body) = find(&|h, _| h.contains_key("x-kizuna-signature"));
    let signature = headers["x-kizuna-signature"].to_str().unwrap_or_default();
    let t: i64 =
        signature.split(',').next().and_then(|p| p.strip_prefix("t=")).and_then(|t| t.parse().ok()).expect("t");
    assert_eq!(signature, kizuna_channels::webhook_signature("whsec", t, body.as_bytes()), "the receiver can verify");
    assert_ne!(signature, kizuna_channels::webhook_signature("other", t, body.as_bytes()));
    assert_eq!(
        serde_json::from_str::<Value>(&body).expect("json"),
        json!({"profile": aiko.to_string(), "event": "Checkout Started"})
    );
}

fn url_decode(body: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(body.as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_mid_send_sends_nothing_twice() {
    let sink = SmtpSink::start();
    let (url, fake) = fake_provider().await;
    let mut settings = email_settings(sink.port);
    settings.line = Some(LineSettings { base_url: url, channel_access_token: "t".into(), rate_per_second: 0.0 });
    let node = Node::start(settings);
    let aiko = node.customer("u1", "aiko@example.com").await;
    node.template("cart", cart_template());
    node.template("line", json!({"channel": "line", "text": "hi"}));
    let queued = node.messenger.enqueue(&[node.request("cart", aiko), node.request("line", aiko)]).expect("queued");
    node.messenger.process_due().await.expect("round");
    assert_eq!(sink.received().len(), 1);
    assert_eq!(fake.requests.lock().expect("lock").len(), 1);
    // As if the server died after handing both over but before recording the outcome.
    let stuck: Vec<Transition> =
        queued.iter().map(|q| Transition::new(q.id.clone(), "sending", "allowed by the governor")).collect();
    node.store.messages().record(&stuck, node.clock.now()).expect("record");
    let restarted = Messenger::new(
        node.store.clone(),
        Arc::new(node.clock.clone()),
        email_settings(sink.port),
        Arc::new(ThreeTeas),
    )
    .expect("messenger");
    restarted.set_channel(Arc::new(kizuna_channels::LineChannel::new(LineSettings {
        base_url: fake_url(&fake, &node),
        channel_access_token: "t".into(),
        rate_per_second: 0.0,
    })));
    assert_eq!(restarted.recover().expect("recover"), 2);
    restarted.process_due().await.expect("round");
    // Email cannot be deduplicated at the server: not resent, marked failed with the reason.
    assert_eq!(node.state(&queued[0].id), "failed");
    assert_eq!(sink.received().len(), 1, "no second email");
    // LINE was retried with the same retry key: LINE answered 409 and delivered nothing new.
    assert_eq!(node.state(&queued[1].id), "sent");
    let requests = fake.requests.lock().expect("lock").clone();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].0["x-line-retry-key"], requests[1].0["x-line-retry-key"]);
}

fn fake_url(_fake: &Fake, node: &Node) -> String {
    node.messenger.settings().line.as_ref().map(|l| l.base_url.clone()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_messages_in_one_round_share_the_cap_and_transactional_ignores_it() {
    let sink = SmtpSink::start();
    let node = Node::start(email_settings(sink.port));
    let aiko = node.customer("u1", "aiko@example.com").await;
    node.template("cart", cart_template());
    node.template(
        "receipt",
        json!({"channel": "email", "purpose": "transactional",
                                    "subject": "Your receipt", "html": "<p>Thank you</p>"}),
    );
    let queued = node
        .messenger
        .enqueue(&[node.request("cart", aiko), node.request("cart", aiko), node.request("receipt", aiko)])
        .expect("queued");
    node.messenger.process_due().await.expect("round");
    let states: Vec<String> = queued.iter().map(|q| node.state(&q.id)).collect();
    // The receipt goes first (transactional priority) and is never capped; one cart email fits the
    // 1-per-16-hours cap, the other waits for it.
    let mut carts = vec![states[0].as_str(), states[1].as_str()];
    carts.sort();
    assert_eq!((carts, states[2].as_str()), (vec!["deferred", "sent"], "sent"));
    assert_eq!(sink.received().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_with_starttls_and_auth() {
    let certs = tempfile::tempdir().expect("dir");
    let (cert, key) = kizuna_testkit::self_signed_localhost(certs.path());
    let sink = SmtpSink::start_tls(&cert, &key, "mailer:s3cret");
    let mut settings = email_settings(sink.port);
    let email = settings.email.as_mut().expect("email");
    email.host = "localhost".into();
    email.tls = SmtpTls::Starttls;
    email.ca_file = Some(cert.display().to_string());
    email.username = Some("mailer".into());
    email.password = Some("s3cret".into());
    let node = Node::start(settings);
    let aiko = node.customer("u1", "aiko@example.com").await;
    node.template("cart", cart_template());
    let queued = node.messenger.enqueue(&[node.request("cart", aiko)]).expect("queued");
    node.messenger.process_due().await.expect("round");
    assert_eq!(node.state(&queued[0].id), "sent");
    let received = sink.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0]["headers"]["X-Sink-TLS"], "yes", "sent over STARTTLS");
    assert_eq!(received[0]["headers"]["X-Sink-Login"], "mailer", "authenticated");
}

/// The newsletter sign-up (anonymous, with an email and marketing consent) and the account (a user id): two
/// profiles until a login links them.
async fn signup_and_account(node: &Node) -> (ProfileId, ProfileId) {
    node.send(json!({"type": "identify", "anonymousId": "anon-9", "traits": {"email": "aiko@example.com",
        "first_name": "Aiko", "timezone": "Asia/Tokyo", "consent": {"email": {"marketing": "granted"}}}}))
        .await;
    node.send(json!({"type": "identify", "userId": "u1", "traits": {"plan": "member"}})).await;
    let lookup = |kind: IdKind, value: &str| {
        node.store.profile_by_identifier(&Identifier::new(kind, value)).expect("lookup").expect("profile")
    };
    let (signup, account) = (lookup(IdKind::AnonymousId, "anon-9"), lookup(IdKind::UserId, "u1"));
    assert_ne!(signup, account);
    (signup, account)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_click_before_a_merge_still_earns_the_order_after_it() {
    let sink = SmtpSink::start();
    let node = Node::start(email_settings(sink.port));
    let (signup, account) = signup_and_account(&node).await;
    let lookup = |kind: IdKind, value: &str| {
        node.store.profile_by_identifier(&Identifier::new(kind, value)).expect("lookup").expect("profile")
    };
    node.template("cart", cart_template());
    let queued = node.messenger.enqueue(&[node.request("cart", signup)]).expect("queued");
    node.messenger.process_due().await.expect("round");
    let html = sink.received()[0]["html"].as_str().expect("html").to_owned();
    node.messenger.click(token_after(&html, "https://crm.tea.example/t/c/")).await.expect("click");

    // Logging in links the two: the sign-up profile is merged into the account.
    node.send(json!({"type": "track", "userId": "u1", "anonymousId": "anon-9", "event": "Product Viewed",
                     "properties": {"product_id": "t1"}}))
        .await;
    let survivor = lookup(IdKind::UserId, "u1");
    assert_eq!(lookup(IdKind::AnonymousId, "anon-9"), survivor);
    assert_eq!(survivor, account, "the account survives, the sign-up profile is merged away");
    node.clock.advance(Duration::hours(1));
    node.send(json!({"type": "track", "userId": "u1", "event": "Order Completed",
                     "properties": {"order_id": "o-9", "revenue": 5000}}))
        .await;
    let mut orders = 0;
    for _ in 0..100 {
        let report = node.store.messages().report("template", node.clock.now() - Duration::days(1)).expect("report");
        orders = report.first().map(|r| r.orders).unwrap_or(0);
        if orders == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(orders, 1, "the order is attributed to the message clicked before the merge");
    // Messaging applies merges to its rows in the background, at most a quarter of a second after hearing of them.
    let profile_of = || node.store.messages().message(&queued[0].id).expect("read").expect("message").profile_id;
    for _ in 0..100 {
        if profile_of() == Some(survivor) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(profile_of(), Some(survivor), "the delivery log follows the merge");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_queued_before_a_merge_goes_to_the_survivor_and_their_caps_count_both_peoples_sends() {
    let sink = SmtpSink::start();
    let node = Node::start(email_settings(sink.port));
    let (signup, _) = signup_and_account(&node).await;
    let lookup = |kind: IdKind, value: &str| {
        node.store.profile_by_identifier(&Identifier::new(kind, value)).expect("lookup").expect("profile")
    };
    node.template("cart", cart_template());
    let first = node.messenger.enqueue(&[node.request("cart", signup)]).expect("queued");
    node.messenger.process_due().await.expect("round");
    assert_eq!(node.state(&first[0].id), "sent");
    let second = node.messenger.enqueue(&[node.request("cart", signup)]).expect("queued");
    // Logging in merges the sign-up into the account before the second email is taken out of the queue.
    node.send(json!({"type": "identify", "userId": "u1", "anonymousId": "anon-9"})).await;
    let survivor = lookup(IdKind::UserId, "u1");
    assert_eq!(lookup(IdKind::AnonymousId, "anon-9"), survivor);
    assert_ne!(survivor, signup, "the account survives");
    let profile_of = |id: &str| node.store.messages().message(id).expect("read").expect("message").profile_id;
    // Messaging follows merges from the change feed, in the background.
    for _ in 0..100 {
        if profile_of(&first[0].id) == Some(survivor) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(profile_of(&first[0].id), Some(survivor), "a sent message follows the merge");
    // The survivor's message list has both, the queued one too (it still names the sign-up profile).
    let listed: Vec<String> = node
        .store
        .messages()
        .messages(&MessageFilter { profile_id: Some(survivor), limit: 10, ..Default::default() })
        .expect("list")
        .into_iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(listed, vec![second[0].id.clone(), first[0].id.clone()], "newest first");
    // The survivor's 1-per-16-hours cap counts the email the sign-up was sent.
    node.messenger.process_due().await.expect("round");
    assert_eq!(node.state(&second[0].id), "deferred");
    assert_eq!(profile_of(&second[0].id), Some(survivor), "the queued message is now the survivor's");
    node.clock.advance(Duration::hours(24));
    node.messenger.process_due().await.expect("round");
    assert_eq!(node.state(&second[0].id), "sent");
    let sends = node
        .store
        .messages()
        .sent_times(survivor, "email", "marketing", node.clock.now() - Duration::days(7))
        .expect("sends");
    assert_eq!(sends.len(), 2, "both emails count against the survivor's caps");
    assert_eq!(sink.received().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_hours_edited_in_the_admin_app_apply_at_once_and_survive_a_restart() {
    let sink = SmtpSink::start();
    let node = Node::start(email_settings(sink.port));
    let aiko = node.customer("u1", "aiko@example.com").await;
    node.template("cart", cart_template());
    // Noon in Tokyo is outside the configured quiet hours (21:00–08:00); the admin makes lunchtime quiet.
    let mut live = node.messenger.live_settings();
    live.policy.quiet_hours = Some(kizuna_messaging::governor::QuietHours {
        start: chrono::NaiveTime::from_hms_opt(11, 30, 0).expect("time"),
        end: chrono::NaiveTime::from_hms_opt(13, 0, 0).expect("time"),
    });
    node.messenger.update_live_settings(live.clone()).expect("update");
    let queued = node.messenger.enqueue(&[node.request("cart", aiko)]).expect("queued");
    node.messenger.process_due().await.expect("round");
    assert_eq!(node.state(&queued[0].id), "deferred", "the edited quiet hours hold the email back");
    let message = node.store.messages().message(&queued[0].id).expect("read").expect("message");
    assert_eq!(message.due_at, noon_tokyo() + Duration::hours(1), "until 13:00 in Tokyo");

    let mut wrong = live.clone();
    wrong.store = json!({"currency": "yen"});
    let refused = node.messenger.update_live_settings(wrong).expect_err("an invalid currency is refused");
    assert!(refused.to_string().contains("ISO 4217"), "{refused}");
    assert_eq!(node.messenger.live_settings(), live, "nothing changed");

    let restarted = Messenger::new(
        node.store.clone(),
        Arc::new(node.clock.clone()),
        email_settings(sink.port),
        Arc::new(ThreeTeas),
    )
    .expect("messenger");
    assert_eq!(restarted.live_settings(), live, "the edit outlives a restart and wins over the config file");
}

/// A template whose link carries the person's address, as account links often do.
fn account_template() -> Value {
    json!({"channel": "email", "purpose": "marketing", "subject": "Your account, {{ profile.first_name }}",
           "html": "<p><a href=\"https://tea.example/account?email={{ profile.email }}\">Your account</a></p>"})
}

/// Every row of every messaging table that mentions `needle`, read straight from the database file.
fn messaging_rows_mentioning(node: &Node, needle: &str) -> Vec<String> {
    let conn = rusqlite::Connection::open(node._dir.path().join(SqliteStore::FILE_NAME)).expect("database");
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'msg_%'")
        .expect("tables")
        .query_map([], |r| r.get(0))
        .expect("tables")
        .collect::<Result<_, _>>()
        .expect("tables");
    let mut found = Vec::new();
    for table in tables {
        let mut stmt = conn.prepare(&format!("SELECT * FROM {table}")).expect("select");
        let columns = stmt.column_count();
        let mut rows = stmt.query([]).expect("rows");
        while let Some(row) = rows.next().expect("row") {
            let text: Vec<String> = (0..columns)
                .map(|i| match row.get_ref(i).expect("value") {
                    rusqlite::types::ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
                    other => format!("{other:?}"),
                })
                .collect();
            if text.iter().any(|t| t.contains(needle)) {
                found.push(format!("{table}: {text:?}"));
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasing_a_person_leaves_their_messages_anonymous_keeps_the_figures_and_sends_nothing_queued() {
    let sink = SmtpSink::start();
    let node = Node::start(email_settings(sink.port));
    let (signup, _) = signup_and_account(&node).await;
    node.template("account", account_template());
    let mut request = node.request("account", signup);
    request.event = json!({"name": "Signed Up", "properties": {"email": "aiko@example.com"}});
    let first = node.messenger.enqueue(std::slice::from_ref(&request)).expect("queued");
    node.messenger.process_due().await.expect("round");
    assert_eq!(node.state(&first[0].id), "sent", "{:?}", node.store.messages().message(&first[0].id));
    let html = sink.received()[0]["html"].as_str().expect("html").to_owned();
    let destination = node.messenger.click(token_after(&html, "https://crm.tea.example/t/c/")).await.expect("click");
    assert!(destination.contains("aiko%40example.com") || destination.contains("aiko@example.com"), "{destination}");
    node.send(json!({"type": "track", "anonymousId": "anon-9", "event": "Order Completed",
                     "properties": {"order_id": "o-1", "revenue": 4200}}))
        .await;
    let since = node.clock.now() - Duration::days(1);
    let report = || node.store.messages().report("template", since).expect("report")[0].clone();
    for _ in 0..100 {
        if report().orders == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let before = report();
    assert_eq!((before.sent, before.clicked, before.orders, before.revenue), (1, 1, 1, 4200.0));
    // A second message waits in the queue, queued for the sign-up profile.
    let second = node.messenger.enqueue(std::slice::from_ref(&request)).expect("queued");
    // Logging in merges the sign-up into the account; then the person asks to be erased.
    node.send(json!({"type": "identify", "userId": "u1", "anonymousId": "anon-9"})).await;
    let survivor =
        node.store.profile_by_identifier(&Identifier::new(IdKind::UserId, "u1")).expect("lookup").expect("profile");
    assert_ne!(survivor, signup);
    assert!(!messaging_rows_mentioning(&node, "aiko@example.com").is_empty(), "the scan finds the address");
    node.pipeline.erase(survivor).await.expect("erased");

    let message = |id: &str| node.store.messages().message(id).expect("read").expect("message");
    // Messaging follows erasures in the background.
    for _ in 0..100 {
        if message(&first[0].id).erased_at.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let sent = message(&first[0].id);
    assert!(sent.erased_at.is_some(), "the sent message is erased");
    assert_eq!((sent.profile_id, sent.recipient.as_deref(), &sent.context), (None, None, &json!({})));
    assert_eq!(sent.state, "sent", "what happened to it stays");
    let queued = message(&second[0].id);
    assert_eq!((queued.state.as_str(), queued.profile_id, queued.erased_at.is_some()), ("suppressed", None, true));
    node.clock.advance(Duration::days(2));
    node.messenger.process_due().await.expect("round");
    assert_eq!(node.state(&second[0].id), "suppressed", "a queued message of an erased person never goes out");
    assert_eq!(sink.received().len(), 1);
    // The old email's link still works and counts, but its address is not kept again.
    node.messenger.click(token_after(&html, "https://crm.tea.example/t/c/")).await.expect("click after erasure");
    assert_eq!(messaging_rows_mentioning(&node, "aiko@example.com"), Vec::<String>::new());
    assert_eq!(messaging_rows_mentioning(&node, "aiko%40example.com"), Vec::<String>::new());
    assert!(
        node.store.messages().touches(survivor, node.clock.now() - Duration::days(30)).expect("touches").is_empty()
    );
    assert!(
        node.store
            .messages()
            .messages(&MessageFilter { profile_id: Some(signup), limit: 10, ..Default::default() })
            .expect("list")
            .is_empty()
    );
    let after = report();
    assert_eq!((after.sent, after.clicked, after.orders, after.revenue), (1, 1, 1, 4200.0), "the figures stay");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erasure_messaging_did_not_hear_of_is_applied_when_it_starts() {
    let sink = SmtpSink::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let clock = TestClock::at(noon_tokyo());
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path(), Durability::Process).expect("store"));
    let source = store.create_source("web", true, DataKind::FirstParty, clock.now()).expect("source");
    let messenger =
        Messenger::new(store.clone(), Arc::new(clock.clone()), email_settings(sink.port), Arc::new(ThreeTeas))
            .expect("messenger");
    // No attribution sink: the erasure below is never fed to messaging, as after a crash.
    let pipeline = Pipeline::start_with_feed(store.clone(), PipelineConfig::default(), Arc::new(clock.clone()), None)
        .expect("pipeline");
    let identify = json!({"type": "identify", "userId": "u1", "traits": {"email": "aiko@example.com",
        "timezone": "Asia/Tokyo", "consent": {"email": {"marketing": "granted"}}}});
    pipeline.ingest(&source, vec![parse_message(identify, clock.now()).expect("valid")]).await.expect("ingest");
    let aiko = store.profile_by_identifier(&Identifier::new(IdKind::UserId, "u1")).expect("lookup").expect("profile");
    let definition: TemplateDefinition = serde_json::from_value(account_template()).expect("definition");
    messenger.save_template("account", &definition).expect("saved");
    let request: SendRequest =
        serde_json::from_value(json!({"template": "account", "profile_id": aiko.to_string()})).expect("request");
    let queued = messenger.enqueue(&[request]).expect("queued");
    messenger.process_due().await.expect("round");
    pipeline.erase(aiko).await.expect("erased");
    let message = || store.messages().message(&queued[0].id).expect("read").expect("message");
    assert_eq!(message().state, "sent", "{:?}", message());
    assert_eq!(message().recipient.as_deref(), Some("aiko@example.com"), "not followed yet");

    let _feed = attribution_sink(&messenger, Box::new(|_| {}));
    for _ in 0..100 {
        if message().erased_at.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let erased = message();
    assert_eq!((erased.recipient, erased.profile_id, erased.state.as_str()), (None, None, "sent"));
    assert!(erased.erased_at.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_in_flight_when_its_person_is_erased_keeps_no_address_and_is_not_retried() {
    let sink = SmtpSink::start();
    let node = Node::start(email_settings(sink.port));
    let aiko = node.customer("u1", "aiko@example.com").await;
    node.template("account", account_template());
    let queued = node.messenger.enqueue(&[node.request("account", aiko)]).expect("queued");
    let id = queued[0].id.clone();
    let record = |t: Transition| node.store.messages().record(&[t], node.clock.now()).expect("recorded");
    let transition = |state: &str, reason: &str| Transition {
        id: id.clone(),
        state: state.into(),
        reason: reason.into(),
        due_at: None,
        recipient: Some("aiko@example.com".into()),
        provider_id: None,
        attempted: true,
        sent: false,
        profile: None,
        forget: false,
        claim: false,
    };
    // Handed to the channel; the person is erased before the outcome comes back.
    record(transition("sending", "allowed by the governor"));
    node.pipeline.erase(aiko).await.expect("erased");
    let message = || node.store.messages().message(&id).expect("read").expect("message");
    for _ in 0..100 {
        if message().erased_at.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!((message().state.as_str(), message().recipient), ("sending", None), "in flight, anonymous");
    // A temporary failure would put it back in the queue: it is suppressed instead.
    let mut retry = transition("deferred", "retry: 451 aiko@example.com greylisted");
    retry.due_at = Some(node.clock.now() + Duration::minutes(1));
    record(retry);
    let after = message();
    assert_eq!((after.state.as_str(), after.recipient, after.reason.as_deref()), ("suppressed", None, Some("erased")));
    let log = node.store.messages().decisions(&id).expect("decisions");
    assert!(log.iter().all(|d| !d.reason.contains("aiko")), "{log:?}");
    assert_eq!(log.last().map(|d| d.state.as_str()), Some("suppressed"));
    assert!(
        matches!(node.messenger.retry(&id), Err(MessagingError::Invalid { .. })),
        "an erased message is not retried"
    );
    node.clock.advance(Duration::minutes(5));
    assert_eq!(node.messenger.process_due().await.expect("round"), 0);
    assert!(sink.received().is_empty());
    assert_eq!(messaging_rows_mentioning(&node, "aiko@example.com"), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_withdrawn_message_stays_withdrawn_even_when_the_worker_read_it_before() {
    let sink = SmtpSink::start();
    let node = Node::start(email_settings(sink.port));
    let aiko = node.customer("u1", "aiko@example.com").await;
    node.template("account", account_template());
    let keyed = |key: &str| {
        let mut request = node.request("account", aiko);
        request.idempotency_key = Some(key.into());
        request
    };
    let queued = node.messenger.enqueue(&[keyed("flow:1:run:1:0"), keyed("flow:1:run:10:0")]).expect("queued");
    // Run 1 ended: its message is withdrawn; run 10's is not (the prefix ends at the run's colon).
    assert_eq!(node.messenger.withdraw(&["flow:1:run:1:".into()], "flow_run_ended: goal").expect("withdrawn"), 1);
    assert_eq!(node.state(&queued[0].id), "dropped");
    assert_eq!(node.state(&queued[1].id), "queued");
    // The worker had read it as queued and now claims it for sending: the withdrawal wins.
    let claim = Transition {
        id: queued[0].id.clone(),
        state: "sending".into(),
        reason: "allowed by the governor".into(),
        due_at: None,
        recipient: Some("aiko@example.com".into()),
        provider_id: None,
        attempted: false,
        sent: false,
        profile: None,
        forget: false,
        claim: true,
    };
    assert_eq!(node.store.messages().record(&[claim], node.clock.now()).expect("record"), vec![false]);
    assert_eq!(node.state(&queued[0].id), "dropped");
    node.messenger.process_due().await.expect("round");
    assert_eq!(node.state(&queued[1].id), "sent");
    assert_eq!(sink.received().len(), 1, "only run 10's message went");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_click_after_the_recipient_was_merged_or_erased_still_redirects() {
    let sink = SmtpSink::start();
    let node = Node::start(email_settings(sink.port));
    // A visitor known by device and email only; later the same device signs in as an existing customer.
    node.send(json!({"type": "identify", "anonymousId": "dev-9", "traits": {
        "email": "visitor@example.com", "first_name": "Kei", "timezone": "Asia/Tokyo",
        "consent": {"email": {"marketing": "granted"}}}}))
        .await;
    let visitor = node
        .store
        .profile_by_identifier(&Identifier::new(IdKind::AnonymousId, "dev-9"))
        .expect("lookup")
        .expect("profile");
    let aiko = node.customer("u1", "aiko@example.com").await;
    node.template("cart", cart_template());
    let queued = node.messenger.enqueue(&[node.request("cart", visitor), node.request("cart", aiko)]).expect("queued");
    assert_eq!(node.messenger.process_due().await.expect("round"), 2);
    assert_eq!((node.state(&queued[0].id), node.state(&queued[1].id)), ("sent".into(), "sent".into()));
    let mut mails = sink.received();
    for _ in 0..100 {
        if mails.len() == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        mails = sink.received();
    }
    let click_of = |to: &str| {
        let mail = mails.iter().find(|m| m["headers"]["To"] == to).unwrap_or_else(|| {
            panic!("no mail to {to} in {:?}", mails.iter().map(|m| &m["headers"]["To"]).collect::<Vec<_>>())
        });
        token_after(mail["html"].as_str().expect("html"), "https://crm.tea.example/t/c/").to_owned()
    };

    node.send(json!({"type": "track", "anonymousId": "dev-9", "userId": "u1", "event": "Signed In"})).await;
    let live = node.store.live_profile_id(visitor).expect("lookup").expect("merged, not gone");
    let (gone, survivor) = if live == visitor { (aiko, visitor) } else { (visitor, live) };
    let gone_mail = if gone == visitor { "visitor@example.com" } else { "aiko@example.com" };
    assert_eq!(node.messenger.click(&click_of(gone_mail)).await.expect("click"), "https://tea.example/p/t1");
    let events = node.store.events(survivor, &Default::default()).expect("events");
    assert!(events.iter().any(|e| e.body["event"] == "Email Link Clicked"), "recorded on the survivor");

    node.pipeline.erase(survivor).await.expect("erase");
    let survivor_mail = if gone_mail == "aiko@example.com" { "visitor@example.com" } else { "aiko@example.com" };
    assert_eq!(node.messenger.click(&click_of(survivor_mail)).await.expect("click"), "https://tea.example/p/t1");
}
