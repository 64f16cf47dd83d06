//! The admin web app in a real browser: Debian's Chromium, driven over WebDriver by chromedriver (both installed
//! by `scripts/test`), against the real `kizuna serve` with the demo store loaded. A marketer signs in, finds a
//! customer by email and reads their merged timeline, builds a segment and sees the API's count, activates a
//! starter flow, previews a template for a customer and opens the analytics charts. Screenshots of the main
//! pages go to `target/ui-screenshots/` (or `$KIZUNA_SCREENSHOTS`) for a reviewer to look at.

mod common;

use common::{Server, free_port, kizuna};
use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PASSWORD: &str = "correct horse battery staple";
const WAIT: Duration = Duration::from_secs(30);

fn find_program(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).flat_map(|dir| names.iter().map(move |n| dir.join(n))).find(|p| p.is_file())
}

struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    // The driver runs in its own process group: killing the group also ends the browser it started, which a
    // failed test (no `close()`) used to leave running.
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-KILL", "--", &format!("-{}", self.child.id())]).status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Browser {
    Chromium,
    Firefox,
}

impl Browser {
    fn name(self) -> &'static str {
        match self {
            Browser::Chromium => "chromium",
            Browser::Firefox => "firefox",
        }
    }
}

/// `.tools/bin` is where `scripts/test` puts geckodriver (built from crates.io; Debian does not package it).
fn find_driver(names: &[&str]) -> Option<PathBuf> {
    let tools = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.tools/bin");
    names.iter().map(|n| tools.join(n)).find(|p| p.is_file()).or_else(|| find_program(names))
}

async fn start_driver(browser: Browser) -> Driver {
    let port = free_port();
    let mut command = match browser {
        Browser::Chromium => {
            let binary = find_driver(&["chromedriver"]).expect(
                "chromedriver is needed for the admin UI test: `scripts/test` installs Debian's chromium-driver",
            );
            let mut command = Command::new(binary);
            command.arg(format!("--port={port}")).arg("--allowed-ips=127.0.0.1");
            command
        }
        Browser::Firefox => {
            let binary = find_driver(&["geckodriver"])
                .expect("geckodriver is needed for the admin UI test: `scripts/test` builds it into .tools/bin");
            let mut command = Command::new(binary);
            command.args(["--host", "127.0.0.1", "--port", &port.to_string()]);
            command
        }
    };
    let child = command
        .process_group(0)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the WebDriver server");
    let url = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok(response) = http.get(format!("{url}/status")).send().await
            && response.json::<Value>().await.is_ok_and(|s| s["value"]["ready"] == true)
        {
            break;
        }
        assert!(Instant::now() < deadline, "the WebDriver server did not become ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Driver { child, url }
}

async fn open_browser(browser: Browser, driver: &Driver) -> Client {
    let mut capabilities = serde_json::Map::new();
    match browser {
        Browser::Chromium => {
            let chromium =
                find_program(&["chromium", "chromium-browser", "google-chrome"]).expect("chromium is installed");
            capabilities.insert(
                "goog:chromeOptions".into(),
                json!({
                    "binary": chromium,
                    "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                             "--window-size=1440,1000", "--lang=en-US", "--no-first-run"],
                }),
            );
        }
        Browser::Firefox => {
            let firefox = find_program(&["firefox-esr", "firefox"]).expect("firefox is installed");
            capabilities.insert(
                "moz:firefoxOptions".into(),
                json!({
                    "binary": firefox,
                    "args": ["-headless", "--width=1440", "--height=1000"],
                    "prefs": {"intl.accept_languages": "en-US", "intl.locale.requested": "en-US"},
                }),
            );
        }
    }
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector).capabilities(capabilities).connect(&driver.url).await.expect("open a browser session")
}

fn screenshots_dir(browser: Browser) -> PathBuf {
    let root = std::env::var_os("KIZUNA_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/ui-screenshots"));
    let dir = root.join(browser.name());
    std::fs::create_dir_all(&dir).expect("screenshot folder");
    dir
}

struct Shots(PathBuf);

impl Shots {
    async fn take(&self, client: &Client, name: &str) {
        let png = client.screenshot().await.expect("screenshot");
        std::fs::write(self.0.join(format!("{name}.png")), png).expect("write screenshot");
    }
}

async fn wait_for(client: &Client, css: &str) -> Element {
    client
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css} did not appear: {e}"))
}

/// Waits until `script` (a JS expression) is truthy in the page; returns its value.
async fn wait_until(client: &Client, what: &str, script: &str) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let value = client.execute(&format!("return ({script});"), vec![]).await.expect("run script");
        if !(value.is_null() || value == false || value == 0 || value == "") {
            return value;
        }
        if Instant::now() >= deadline {
            // What the page showed, so a timeout in CI can be understood without a rerun.
            let page = client
                .execute("return document.querySelector('main')?.innerText?.slice(0, 1500) ?? '';", vec![])
                .await
                .unwrap_or_default();
            panic!("timed out waiting for {what} ({script}); the page showed: {page}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn text_of(client: &Client, css: &str) -> String {
    wait_for(client, css).await.text().await.expect("text")
}

struct Api {
    base: String,
    key: String,
    http: reqwest::Client,
}

impl Api {
    async fn get(&self, path: &str) -> Value {
        let response = self.http.get(format!("{}{path}", self.base)).bearer_auth(&self.key).send().await.expect("GET");
        assert!(response.status().is_success(), "GET {path}: {}", response.status());
        response.json().await.expect("json")
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.key)
            .json(&body)
            .send()
            .await
            .expect("POST");
        assert!(response.status().is_success(), "POST {path}: {}", response.status());
        response.json().await.expect("json")
    }
}

/// A customer of the demo store whose profile was merged from two ids, with their email.
async fn merged_customer(api: &Api) -> (String, String) {
    let members = api.get("/api/segments/repeat-buyers/members?limit=200").await;
    for member in members["members"].as_array().expect("members") {
        let id = member["profile_id"].to_string();
        let identities = api.get(&format!("/api/profiles/{id}/identities")).await;
        let email = identities["identities"]
            .as_array()
            .and_then(|ids| ids.iter().find(|i| i["type"] == "email"))
            .and_then(|i| i["value"].as_str());
        if let Some(email) = email
            && identities["merges"].as_array().is_some_and(|m| !m.is_empty())
        {
            return (id, email.to_owned());
        }
    }
    panic!("the demo store has a repeat buyer with an email whose profile was merged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_marketer_works_through_the_admin_app_in_chromium() {
    marketer_session(Browser::Chromium).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_marketer_works_through_the_admin_app_in_firefox() {
    marketer_session(Browser::Firefox).await;
}

/// One browser at a time: each run loads a demo store and a server, and two at once on a small CI machine only
/// make both slow.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn marketer_session(browser: Browser) {
    let _turn = ONE_AT_A_TIME.lock().await;
    let shots = Shots(screenshots_dir(browser));
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().to_str().expect("utf-8 path").to_owned();

    // The demo store, loaded through the real pipeline, and the first admin created from the command line.
    let demo = kizuna()
        .env("KIZUNA_ADMIN_PASSWORD", "demo admin password")
        .args(["demo", "--no-serve", "--customers", "400", "--data-dir", &data])
        .output()
        .expect("run demo");
    let stdout = String::from_utf8_lossy(&demo.stdout).into_owned();
    assert!(demo.status.success(), "demo failed: {}", String::from_utf8_lossy(&demo.stderr));
    let key = stdout
        .lines()
        .find_map(|l| l.strip_prefix("admin API key:"))
        .map(|k| k.trim().to_owned())
        .expect("the demo prints an admin API key");
    let mut create = kizuna()
        .args(["admin", "create", "Ops@Example.com", "--password-stdin", "--data-dir", &data])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("admin create");
    create.stdin.take().expect("stdin").write_all(format!("{PASSWORD}\n").as_bytes()).expect("password");
    let created = create.wait_with_output().expect("admin create");
    assert!(created.status.success(), "admin create: {}", String::from_utf8_lossy(&created.stderr));
    let short = kizuna()
        .args(["admin", "create", "short@example.com", "--password-stdin", "--data-dir", &data])
        .stdin(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().expect("stdin").write_all(b"short\n")?;
            c.wait_with_output()
        })
        .expect("admin create");
    assert!(!short.status.success(), "a short password is refused");

    let server = Server::start(dir.path()).await;
    let api = Api { base: server.base.clone(), key, http: reqwest::Client::new() };
    let driver = start_driver(browser).await;
    let client = open_browser(browser, &driver).await;
    let base = server.base.clone();

    // Sign in: a wrong password is refused with the API's error, the right one opens the app.
    client.goto(&format!("{base}/admin/")).await.expect("open the app");
    wait_for(&client, "form.signin").await;
    shots.take(&client, "00-sign-in").await;
    wait_for(&client, "#email").await.send_keys("ops@example.com").await.expect("type");
    wait_for(&client, "#password").await.send_keys("not the password").await.expect("type");
    wait_for(&client, "form.signin button[type=submit]").await.click().await.expect("submit");
    assert!(text_of(&client, ".form-status .error").await.contains("invalid_credentials"));
    let password = wait_for(&client, "#password").await;
    password.clear().await.expect("clear");
    password.send_keys(PASSWORD).await.expect("type");
    wait_for(&client, "form.signin button[type=submit]").await.click().await.expect("submit");
    wait_for(&client, "nav.sidebar").await;
    let cookie = client.get_named_cookie("kizuna_session").await.expect("the session cookie is set");
    assert_eq!(cookie.http_only(), Some(true), "the session cookie is HttpOnly");
    assert_eq!(
        client.execute("return document.cookie.includes('kizuna_session')", vec![]).await.expect("script"),
        false,
        "page scripts cannot read the session cookie"
    );

    // Home: KPI cards with sparklines and the journey funnel, from the latest analytics run.
    let dashboard = api.get("/api/dashboard?days=365").await;
    client.goto(&format!("{base}/admin/?days=365")).await.expect("home");
    wait_for(&client, "[data-kpi=revenue] .value").await;
    wait_until(&client, "the funnel", "document.querySelector('svg[data-chart=funnel]')?.dataset.points > 0").await;
    let orders_shown = text_of(&client, "[data-kpi=orders] .value").await.replace(',', "");
    assert_eq!(orders_shown, dashboard["kpis"]["current"]["orders"].to_string(), "the orders KPI is the API's");
    wait_until(&client, "sparklines", "document.querySelectorAll('svg[data-chart=sparkline]').length >= 3").await;
    shots.take(&client, "01-home").await;

    // Customers: find a person by email and see their merged profile and timeline.
    let (profile_id, email) = merged_customer(&api).await;
    client.goto(&format!("{base}/admin/customers")).await.expect("customers");
    wait_for(&client, "#customer-search").await.send_keys(&email).await.expect("type");
    wait_for(&client, "form[role=search] button[type=submit]").await.click().await.expect("search");
    wait_until(&client, "the profile page", &format!("location.pathname === '/admin/customers/{profile_id}'")).await;
    wait_for(&client, "#timeline li[data-seq]").await;
    let page_text = text_of(&client, "main").await;
    assert!(page_text.contains(&email), "the profile shows the email");
    assert!(page_text.contains("Merge history") && page_text.contains("anonymous_id"), "the merge is explained");
    let events = api.get(&format!("/api/profiles/{profile_id}/events?limit=25")).await;
    let api_seqs: Vec<String> =
        events["events"].as_array().expect("events").iter().map(|e| e["seq"].to_string()).collect();
    let shown_seqs = client
        .execute("return [...document.querySelectorAll('#timeline li[data-seq]')].map(li => li.dataset.seq)", vec![])
        .await
        .expect("seqs");
    let shown_seqs: Vec<String> =
        shown_seqs.as_array().expect("list").iter().map(|s| s.as_str().unwrap_or_default().to_owned()).collect();
    assert_eq!(shown_seqs, api_seqs, "the timeline is the merged profile's events, newest first");
    shots.take(&client, "02-customer").await;

    // Segments: write the text, the builder follows, the preview count is the API's.
    client.goto(&format!("{base}/admin/segments/new")).await.expect("new segment");
    let text = wait_for(&client, "#segment-text").await;
    // The page is settled (its first preview shown) before typing, as a person would see it.
    wait_until(&client, "the first preview", "document.querySelector('#preview-count')?.dataset.text").await;
    text.clear().await.expect("clear");
    text.send_keys("computed.orders_count >= 3").await.expect("type");
    let expected = api.post("/api/segments/preview", json!({"text": "computed.orders_count >= 3", "sample": 1})).await;
    let shown = wait_until(
        &client,
        "the preview count",
        "document.querySelector('#segment-builder input.path')?.value === 'computed.orders_count' \
         && document.querySelector('#preview-count[data-text=\"computed.orders_count >= 3\"]')?.dataset.count",
    )
    .await;
    assert_eq!(
        shown.as_str().unwrap_or_default(),
        expected["count"].to_string(),
        "the preview counts what the API counts"
    );
    let name = wait_for(&client, "#segment-name").await;
    name.clear().await.expect("clear");
    name.send_keys("ui-loyal").await.expect("type");
    wait_for(&client, "#segment-save").await.click().await.expect("save");
    wait_until(&client, "the saved segment", "location.pathname === '/admin/segments/ui-loyal'").await;
    wait_for(&client, "#segment-members table").await;
    let saved = api.get("/api/segments/ui-loyal").await;
    assert_eq!(saved["text"], "computed.orders_count >= 3");
    shots.take(&client, "03-segment").await;
    client.goto(&format!("{base}/admin/segments")).await.expect("segments");
    wait_for(&client, "[data-segment-count='ui-loyal']").await;
    shots.take(&client, "04-segments").await;

    // Flows: open a starter flow, see its graph, replay it on history, activate it.
    client.goto(&format!("{base}/admin/flows/cart_abandonment")).await.expect("flow");
    let flow = api.get("/api/flows/cart_abandonment").await;
    let steps = flow["definition"]["steps"].as_array().expect("steps").len();
    let drawn = wait_until(&client, "the flow graph", "document.querySelectorAll('#flow-graph g.step').length").await;
    assert_eq!(drawn, json!(steps), "one node per step");
    wait_for(&client, "#flow-replay-run").await.click().await.expect("replay");
    wait_for(&client, "#replay-summary").await;
    wait_for(&client, "#flow-activate").await.click().await.expect("activate");
    wait_until(&client, "the active badge", "document.querySelector('#flow-badge')?.classList.contains('active')")
        .await;
    assert_eq!(api.get("/api/flows/cart_abandonment").await["status"], "active");
    shots.take(&client, "05-flow").await;
    client.goto(&format!("{base}/admin/flows")).await.expect("flows");
    wait_for(&client, "[data-flow-status='cart_abandonment'].active").await;
    shots.take(&client, "06-flows").await;

    // Messages: preview a template for this customer; the subject is the one the API renders.
    client.goto(&format!("{base}/admin/messages/templates/welcome")).await.expect("template");
    let who = wait_for(&client, "#preview-profile").await;
    who.send_keys(&profile_id).await.expect("type");
    client
        .execute("document.querySelector('#preview-profile').dispatchEvent(new Event('change'))", vec![])
        .await
        .expect("change");
    let rendered = api.post("/api/templates/welcome/preview", json!({"profile_id": profile_id})).await;
    let subject = rendered["subject"].as_str().expect("subject").to_owned();
    wait_until(
        &client,
        "the personalised subject",
        &format!("document.querySelector('#preview-subject')?.textContent === {}", json!(subject)),
    )
    .await;
    assert!(
        client
            .execute("return document.querySelector('#email-frame').srcdoc.length > 100", vec![])
            .await
            .expect("frame")
            == true,
        "the email's HTML renders in the frame"
    );
    shots.take(&client, "07-template").await;
    client.goto(&format!("{base}/admin/messages")).await.expect("messages");
    wait_for(&client, "#delivery-log table").await;
    shots.take(&client, "08-messages").await;

    // Recommendations for the customer.
    client.goto(&format!("{base}/admin/recommendations")).await.expect("recommendations");
    wait_for(&client, "#recs-profile").await.send_keys(&profile_id).await.expect("type");
    wait_for(&client, "#recs-show").await.click().await.expect("show");
    wait_for(&client, "#recs-results table").await;
    wait_for(&client, "#recs-evaluate").await.click().await.expect("evaluate");
    let scored = wait_until(
        &client,
        "the offline evaluation chart",
        "document.querySelector('#chart-recs-evaluation svg[data-chart=bar]')?.dataset.points",
    )
    .await;
    assert!(scored.as_str().and_then(|p| p.parse::<u32>().ok()).is_some_and(|p| p >= 6), "two strategies × 3 metrics");
    let evaluation = api.get("/api/recommendations/evaluation").await;
    let strategies: Vec<&str> = evaluation["evaluation"]["results"]
        .as_array()
        .expect("results")
        .iter()
        .filter_map(|r| r["strategy"].as_str())
        .collect();
    assert_eq!(strategies, ["popularity", "ease"]);
    shots.take(&client, "09-recommendations").await;

    // Analytics: every chart drew data.
    client.goto(&format!("{base}/admin/analytics")).await.expect("analytics");
    for chart in [
        "#chart-cohorts svg[data-chart=heatmap]",
        "#chart-rfm svg[data-chart=heatmap]",
        "#chart-clv svg[data-chart=bar]",
        "#chart-churn svg[data-chart=bar]",
        "#chart-holdout svg[data-chart=bar]",
    ] {
        let points = wait_until(&client, chart, &format!("document.querySelector(\"{chart}\")?.dataset.points")).await;
        assert!(
            points.as_str().and_then(|p| p.parse::<u32>().ok()).is_some_and(|p| p > 0),
            "{chart} has data: {points}"
        );
    }
    let axis_labels = client
        .execute("return document.querySelectorAll('#chart-holdout svg text').length", vec![])
        .await
        .expect("labels");
    assert!(axis_labels.as_u64().is_some_and(|n| n > 5), "charts have axes and labels");
    shots.take(&client, "10-analytics").await;

    // Settings, and the Japanese translation.
    client.goto(&format!("{base}/admin/settings")).await.expect("settings");
    wait_for(&client, "#source-name").await;
    shots.take(&client, "11-settings").await;
    // The store's currency is edited here; a wrong one is refused with the field named.
    let currency = wait_for(&client, "#store-currency").await;
    currency.clear().await.expect("clear");
    currency.send_keys("1x").await.expect("type");
    wait_for(&client, "#settings-save").await.click().await.expect("save");
    assert!(text_of(&client, "#settings-status .error").await.contains("store.currency"));
    currency.clear().await.expect("clear");
    currency.send_keys("JPY").await.expect("type");
    wait_for(&client, "#settings-save").await.click().await.expect("save");
    wait_for(&client, "#settings-status .ok").await;
    assert_eq!(api.get("/api/settings").await["store"]["currency"], "JPY");
    let language = wait_for(&client, "header.topbar select").await;
    language.select_by_value("ja").await.expect("switch to Japanese");
    wait_until(&client, "Japanese navigation", "document.querySelector('nav.sidebar').textContent.includes('顧客')")
        .await;
    shots.take(&client, "12-settings-ja").await;

    // Signing out ends the session: the API refuses the old cookie.
    let old_cookie = client.get_named_cookie("kizuna_session").await.expect("cookie").value().to_owned();
    wait_for(&client, "header.topbar button").await.click().await.expect("sign out");
    wait_for(&client, "form.signin").await;
    let refused = reqwest::Client::new()
        .get(format!("{base}/api/segments"))
        .header("Cookie", format!("kizuna_session={old_cookie}"))
        .send()
        .await
        .expect("request");
    assert_eq!(refused.status(), 401, "a signed-out session opens nothing");
    client.close().await.expect("close the browser");
    drop(driver);
}
