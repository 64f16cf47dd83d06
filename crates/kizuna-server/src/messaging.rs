//! The messaging API: templates (versioned, checked on save, previewed, test-sent), queuing messages, the
//! delivery log with every decision, suppressions, the performance report, and the public tracking endpoints
//! (open pixel, click redirect, one-click unsubscribe, preference page) and provider webhooks.

use crate::admin::{Admin, parse_profile_id};
use crate::error::invalid_param;
use crate::{ApiError, ApiResult, AppState, blocking};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post, put};
use kizuna_messaging::TemplateDefinition;
use kizuna_messaging_service::{MessagingError, Messenger, SendRequest};
use kizuna_store::messages::MessageFilter;
use kizuna_types::{Code, KizunaError};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::HashMap;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/templates", get(list_templates))
        .route("/api/templates/preview", post(preview_draft))
        .route("/api/templates/starters", get(starters))
        .route("/api/templates/{name}", get(get_template).put(put_template).delete(delete_template))
        .route("/api/templates/{name}/preview", post(preview_saved))
        .route("/api/templates/{name}/test", post(test_send))
        .route("/api/messages", get(list_messages).post(enqueue))
        .route("/api/messages/{id}", get(get_message))
        .route("/api/messages/{id}/retry", post(retry))
        .route("/api/messaging/report", get(report))
        .route("/api/settings", get(settings).put(update_settings))
        .route("/api/settings/channels/{channel}/test", post(test_channel))
        .route("/api/suppressions", get(list_suppressions))
        .route("/api/suppressions/{channel}/{address}", put(add_suppression).delete(remove_suppression))
        .route("/hooks/messages/status", post(provider_status))
        .route("/hooks/sms/inbound", post(inbound_sms))
        .route("/t/o/{token}", get(open_pixel))
        .route("/t/c/{token}", get(click))
        .route("/t/u/{token}", get(unsubscribe_page).post(unsubscribe_one_click))
        .route("/t/p/{token}", get(preferences_page).post(preferences_save))
}

impl From<MessagingError> for ApiError {
    fn from(e: MessagingError) -> Self {
        let error = match e {
            MessagingError::Store(e) => return ApiError::from(e),
            MessagingError::TemplateNotFound(ref name) => {
                KizunaError::new(Code::TemplateNotFound, format!("no template is named \"{name}\""))
                    .with_field("template")
            }
            MessagingError::InvalidTemplate(t) => KizunaError::new(
                Code::InvalidTemplate,
                format!("{} line {}, column {}: {}", t.field, t.line, t.column, t.message),
            )
            .with_field(t.field),
            MessagingError::Invalid { field, message } => {
                KizunaError::new(Code::InvalidField, message).with_field(field)
            }
            MessagingError::ProfileNotFound(id) => {
                KizunaError::new(Code::ProfileNotFound, format!("profile {id} not found")).with_field("profile_id")
            }
            MessagingError::MessageNotFound(_) => KizunaError::new(Code::MessageNotFound, e.to_string()),
            MessagingError::ChannelNotConfigured(_) => KizunaError::new(Code::ChannelNotConfigured, e.to_string()),
            MessagingError::Render(_) => KizunaError::new(Code::RenderFailed, e.to_string()),
            MessagingError::BadToken => KizunaError::new(Code::InvalidTrackingLink, e.to_string()).with_field("token"),
            MessagingError::Send(_) => KizunaError::new(Code::SendFailed, e.to_string()),
        };
        ApiError(error)
    }
}

fn messenger(state: &AppState) -> ApiResult<Messenger> {
    state.messenger().ok_or_else(|| ApiError(KizunaError::new(Code::Unavailable, "messaging is not running")))
}

fn json_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> ApiResult<T> {
    serde_json::from_slice(body).map_err(|e| {
        let text = e.to_string();
        let field = text.split('`').nth(1).map(str::to_owned);
        let code = if e.is_syntax() || e.is_eof() { Code::MalformedJson } else { Code::InvalidField };
        let mut error = KizunaError::new(code, text);
        if let Some(field) = field.filter(|_| code == Code::InvalidField) {
            error = error.with_field(field);
        }
        ApiError(error)
    })
}

// ---- templates ---------------------------------------------------------------------------------------------

#[utoipa::path(get, path = "/api/templates", tag = "templates",
    responses((status = 200, description = "{templates: [{name, version, definition, created_at}]}")), security(("admin_key" = [])))]
async fn list_templates(_: Admin, State(state): State<AppState>) -> ApiResult<axum::Json<Value>> {
    let templates = state.store().messages().templates()?;
    Ok(axum::Json(json!({"templates": templates})))
}

/// Starter templates (welcome, cart and browse abandonment, review request, win-back, LINE and SMS): PUT one
/// under a name to use it.
#[utoipa::path(get, path = "/api/templates/starters", tag = "templates",
    responses((status = 200, description = "{starters: [{name, definition}]}")), security(("admin_key" = [])))]
async fn starters(_: Admin) -> axum::Json<Value> {
    let starters: Vec<Value> = kizuna_messaging::starters::starter_templates()
        .into_iter()
        .map(|(name, definition)| json!({"name": name, "definition": definition}))
        .collect();
    axum::Json(json!({"starters": starters}))
}

#[utoipa::path(get, path = "/api/templates/{name}", tag = "templates",
    responses((status = 200, description = "The current (or `?version=N`) version")), security(("admin_key" = [])))]
async fn get_template(
    _: Admin,
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> ApiResult<axum::Json<Value>> {
    let version = match params.get("version") {
        Some(v) => Some(v.parse::<i64>().map_err(|_| invalid_param("version", "a version is a whole number"))?),
        None => None,
    };
    let template = state
        .store()
        .messages()
        .template(&name, version)?
        .ok_or_else(|| ApiError::from(MessagingError::TemplateNotFound(name.clone())))?;
    Ok(axum::Json(json!(template)))
}

#[utoipa::path(put, path = "/api/templates/{name}", tag = "templates",
    responses((status = 200, description = "{version}; 400 invalid_template names the part, line and column")), security(("admin_key" = [])))]
async fn put_template(
    _: Admin,
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<axum::Json<Value>> {
    let definition: TemplateDefinition = json_body(&body)?;
    let messenger = messenger(&state)?;
    let version = blocking(move || Ok(messenger.save_template(&name, &definition)?)).await?;
    Ok(axum::Json(json!({"version": version})))
}

#[utoipa::path(delete, path = "/api/templates/{name}", tag = "templates",
    responses((status = 200, description = "Deleted (its versions stay for the delivery log)")), security(("admin_key" = [])))]
async fn delete_template(_: Admin, State(state): State<AppState>, Path(name): Path<String>) -> ApiResult<StatusCode> {
    if state.store().messages().delete_template(&name)? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(MessagingError::TemplateNotFound(name).into())
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct PreviewBody {
    #[serde(default)]
    definition: Option<TemplateDefinition>,
    #[serde(default)]
    profile_id: Option<String>,
    #[serde(default)]
    event: Value,
}

fn preview_profile(body: &PreviewBody) -> ApiResult<Option<u64>> {
    body.profile_id.as_deref().map(parse_profile_id).transpose()
}

#[utoipa::path(post, path = "/api/templates/{name}/preview", tag = "templates",
    responses((status = 200, description = "The rendered message for {profile_id?, event?}")), security(("admin_key" = [])))]
async fn preview_saved(
    _: Admin,
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<axum::Json<Value>> {
    let body: PreviewBody = if body.is_empty() { PreviewBody::default() } else { json_body(&body)? };
    let profile = preview_profile(&body)?;
    let messenger = messenger(&state)?;
    let rendered = blocking(move || Ok(messenger.preview(Ok(&name), profile, &body.event)?)).await?;
    Ok(axum::Json(json!(rendered)))
}

#[utoipa::path(post, path = "/api/templates/preview", tag = "templates",
    responses((status = 200, description = "The rendered draft {definition, profile_id?, event?}")), security(("admin_key" = [])))]
async fn preview_draft(_: Admin, State(state): State<AppState>, body: Bytes) -> ApiResult<axum::Json<Value>> {
    let body: PreviewBody = json_body(&body)?;
    let profile = preview_profile(&body)?;
    let Some(definition) = body.definition.clone() else {
        return Err(ApiError(
            KizunaError::new(Code::MissingField, "give the draft as `definition`").with_field("definition"),
        ));
    };
    let messenger = messenger(&state)?;
    let rendered = blocking(move || Ok(messenger.preview(Err(&definition), profile, &body.event)?)).await?;
    Ok(axum::Json(json!(rendered)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TestBody {
    to: String,
    #[serde(default)]
    profile_id: Option<String>,
}

#[utoipa::path(post, path = "/api/templates/{name}/test", tag = "templates",
    responses((status = 200, description = "{id, state}: sent now to {to}, outside the governor")), security(("admin_key" = [])))]
async fn test_send(
    _: Admin,
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<axum::Json<Value>> {
    let body: TestBody = json_body(&body)?;
    if body.to.trim().is_empty() {
        return Err(ApiError(
            KizunaError::new(Code::MissingField, "give the address to send the test to").with_field("to"),
        ));
    }
    let profile = body.profile_id.as_deref().map(parse_profile_id).transpose()?;
    let id = messenger(&state)?.send_test(&name, body.to.trim(), profile).await?;
    Ok(axum::Json(json!({"id": id, "state": "sent"})))
}

// ---- messages ----------------------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(untagged)]
enum EnqueueBody {
    Many { messages: Vec<SendRequest> },
    One(SendRequest),
}

#[utoipa::path(post, path = "/api/messages", tag = "messages",
    responses((status = 200, description = "202 {messages: [{id, created}]}")), security(("admin_key" = [])))]
async fn enqueue(_: Admin, State(state): State<AppState>, body: Bytes) -> ApiResult<(StatusCode, axum::Json<Value>)> {
    // Parsed as one message first for precise errors; `{messages: [...]}` for a batch.
    let requests = match serde_json::from_slice::<Value>(&body) {
        Ok(v) if v.get("messages").is_some() => match json_body::<EnqueueBody>(&body)? {
            EnqueueBody::Many { messages } => messages,
            EnqueueBody::One(one) => vec![one],
        },
        _ => vec![json_body::<SendRequest>(&body)?],
    };
    if requests.is_empty() || requests.len() > 1000 {
        return Err(invalid_param("messages", "send 1 to 1000 messages"));
    }
    let messenger = messenger(&state)?;
    let queued = blocking(move || Ok(messenger.enqueue(&requests)?)).await?;
    Ok((StatusCode::ACCEPTED, axum::Json(json!({"messages": queued}))))
}

#[utoipa::path(get, path = "/api/messages", tag = "messages",
    responses((status = 200, description = "The delivery log, newest first: {messages, next_before}")), security(("admin_key" = [])))]
async fn list_messages(
    _: Admin,
    State(state): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
) -> ApiResult<axum::Json<Value>> {
    const PARAMS: &[&str] = &["profile_id", "state", "channel", "template", "flow", "before", "limit"];
    if let Some(unknown) = params.keys().find(|k| !PARAMS.contains(&k.as_str())) {
        return Err(invalid_param(unknown, format!("unknown parameter; use {}", PARAMS.join(", "))));
    }
    let limit = match params.get("limit") {
        Some(raw) => raw
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=500).contains(n))
            .ok_or_else(|| invalid_param("limit", "1 to 500"))?,
        None => 50,
    };
    if let Some(s) = params.get("state")
        && kizuna_messaging::MessageState::parse(s).is_none()
    {
        return Err(invalid_param(
            "state",
            "one of queued, deferred, sending, sent, delivered, bounced, failed, suppressed, dropped",
        ));
    }
    let filter = MessageFilter {
        profile_id: params.get("profile_id").map(|p| parse_profile_id(p)).transpose()?,
        state: params.get("state").cloned(),
        channel: params.get("channel").cloned(),
        template: params.get("template").cloned(),
        flow: params.get("flow").cloned(),
        before: params.get("before").cloned(),
        limit,
    };
    let store = state.store().clone();
    let messages = blocking(move || Ok(store.messages().messages(&filter)?)).await?;
    let next = (messages.len() == limit).then(|| messages.last().map(|m| m.id.clone())).flatten();
    Ok(axum::Json(json!({"messages": messages, "next_before": next})))
}

#[utoipa::path(get, path = "/api/messages/{id}", tag = "messages",
    responses((status = 200, description = "{message, decisions}")), security(("admin_key" = [])))]
async fn get_message(_: Admin, State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<axum::Json<Value>> {
    let message = state
        .store()
        .messages()
        .message(&id)?
        .ok_or_else(|| ApiError::from(MessagingError::MessageNotFound(id.clone())))?;
    let decisions = state.store().messages().decisions(&id)?;
    Ok(axum::Json(json!({"message": message, "decisions": decisions})))
}

#[utoipa::path(post, path = "/api/messages/{id}/retry", tag = "messages",
    responses((status = 200, description = "202: a failed, dropped or suppressed message is queued again")), security(("admin_key" = [])))]
async fn retry(_: Admin, State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<StatusCode> {
    messenger(&state)?.retry(&id)?;
    Ok(StatusCode::ACCEPTED)
}

#[utoipa::path(get, path = "/api/messaging/report", tag = "messages",
    responses((status = 200, description = "Sent, opened, machine-opened, clicked, orders and revenue per group")), security(("admin_key" = [])))]
async fn report(
    _: Admin,
    State(state): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
) -> ApiResult<axum::Json<Value>> {
    let group = params.get("group").map(String::as_str).unwrap_or("template");
    if !["template", "flow", "channel", "campaign"].contains(&group) {
        return Err(invalid_param("group", "one of template, flow, channel, campaign"));
    }
    let days = match params.get("days") {
        Some(raw) => raw
            .parse::<i64>()
            .ok()
            .filter(|d| (1..=3650).contains(d))
            .ok_or_else(|| invalid_param("days", "1 to 3650"))?,
        None => 30,
    };
    let by_day = match params.get("interval").map(String::as_str) {
        None | Some("total") => false,
        Some("day") => true,
        Some(_) => return Err(invalid_param("interval", "total (the default) or day")),
    };
    let since = state.clock().now() - chrono::Duration::days(days);
    let store = state.store().clone();
    let group_owned = group.to_owned();
    if by_day {
        let rows = blocking(move || Ok(store.messages().report_by_day(&group_owned, since)?)).await?;
        let rows: Vec<Value> = rows
            .into_iter()
            .map(|(day, row)| {
                let date = chrono::DateTime::from_timestamp(day * 86_400, 0).map(|d| d.date_naive().to_string());
                let mut value = json!(row);
                value["date"] = json!(date);
                value
            })
            .collect();
        return Ok(axum::Json(json!({"group": group, "days": days, "interval": "day", "rows": rows})));
    }
    let rows = blocking(move || Ok(store.messages().report(&group_owned, since)?)).await?;
    Ok(axum::Json(json!({"group": group, "days": days, "rows": rows})))
}

/// Settings of the channels with their secrets left out: secret-named fields go, and URLs keep only their
/// scheme and host (a webhook URL or a `user:pass@` host is itself a credential).
fn without_secrets(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .filter(|(key, _)| !["password", "secret", "token", "auth", "key"].iter().any(|s| key.contains(s)))
                .map(|(key, value)| (key, without_secrets(value)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(without_secrets).collect()),
        Value::String(text) => Value::String(url_origin(&text).unwrap_or(text)),
        other => other,
    }
}

/// `https://user:pw@hooks.example.com/T0/B1?x=y` → `https://hooks.example.com/…`; `None` for non-URLs.
fn url_origin(text: &str) -> Option<String> {
    let (scheme, rest) = text.split_once("://")?;
    if scheme.is_empty() || !scheme.chars().all(|c| c.is_ascii_alphanumeric() || c == '+') {
        return None;
    }
    let (authority, tail) = rest.split_at(rest.find(['/', '?', '#']).unwrap_or(rest.len()));
    let host = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    let more = if tail.trim_start_matches('/').is_empty() { "" } else { "/…" };
    Some(format!("{scheme}://{host}{more}"))
}

/// The messaging settings the server runs with (from the config file and environment): store (name, currency,
/// locale, time zone), sending policy (quiet hours, frequency caps, opt-in rule) and each channel's provider,
/// without secrets.
#[utoipa::path(get, path = "/api/settings", tag = "messages",
    responses((status = 200, description = "{store, policy, channels: {email, sms, line, webhook}, public_url}")),
    security(("admin_key" = [])))]
async fn settings(_: Admin, State(state): State<AppState>) -> ApiResult<axum::Json<Value>> {
    let messenger = messenger(&state)?;
    Ok(axum::Json(settings_json(&messenger)))
}

fn settings_json(messenger: &Messenger) -> Value {
    let settings = messenger.settings();
    let live = messenger.live_settings();
    let channel = |value: Value| {
        if value.is_null() {
            json!({"configured": false})
        } else {
            json!({"configured": true, "settings": without_secrets(value)})
        }
    };
    json!({
        "store": live.store,
        "public_url": settings.public_url,
        "policy": live.policy,
        "attribution": settings.attribution,
        "channels": {
            "email": channel(json!(settings.email)),
            "sms": channel(json!(settings.sms)),
            "line": channel(json!(settings.line)),
            "webhook": channel(json!(settings.webhook)),
        },
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SettingsChange {
    store: Option<Value>,
    policy: Option<Value>,
}

/// Change the store settings (name, url, currency, locale, timezone: the keys sent replace theirs, `null`
/// removes one) and/or the whole sending policy. Saved in the data directory; they take precedence over the
/// config file from then on. A change that does not validate is refused whole, naming the field.
#[utoipa::path(put, path = "/api/settings", tag = "messages",
    request_body(content = String, description = "{store?: {…}, policy?: {caps, quiet_hours, default_timezone, max_delay_hours, marketing_requires_opt_in}}", content_type = "application/json"),
    responses((status = 200, description = "The settings now in force (as GET)"), (status = 400, description = "invalid_field naming the field")),
    security(("admin_key" = [])))]
async fn update_settings(_: Admin, State(state): State<AppState>, body: Bytes) -> ApiResult<axum::Json<Value>> {
    let change: SettingsChange = json_body(&body)?;
    let messenger = messenger(&state)?;
    let mut next = messenger.live_settings();
    if let Some(store) = change.store {
        let Value::Object(fields) = store else {
            return Err(ApiError(KizunaError::new(Code::InvalidField, "store is an object").with_field("store")));
        };
        let current = next.store.as_object_mut().ok_or_else(|| ApiError(KizunaError::internal("store settings")))?;
        for (key, value) in fields {
            if value.is_null() {
                current.remove(&key);
            } else {
                current.insert(key, value);
            }
        }
    }
    if let Some(policy) = change.policy {
        next.policy = serde_path_to_error::deserialize(policy).map_err(|e| {
            ApiError(
                KizunaError::new(Code::InvalidField, format!("policy: {}", e.inner()))
                    .with_field(format!("policy.{}", e.path())),
            )
        })?;
    }
    let writer = messenger.clone();
    blocking(move || Ok(writer.update_live_settings(next)?)).await?;
    Ok(axum::Json(settings_json(&messenger)))
}

/// Checks that a channel's provider answers: for email, connects to the SMTP server (TLS and login as
/// configured) and says NOOP. Answers 200 with `{ok, message}` either way; 409 when the channel is not set up.
#[utoipa::path(post, path = "/api/settings/channels/{channel}/test", tag = "messages",
    responses((status = 200, description = "{ok, message}"), (status = 409, description = "The channel is not configured")),
    security(("admin_key" = [])))]
async fn test_channel(
    _: Admin,
    State(state): State<AppState>,
    Path(channel): Path<String>,
) -> ApiResult<axum::Json<Value>> {
    let messenger = messenger(&state)?;
    let not_configured = |name: &str| {
        ApiError(KizunaError::new(
            Code::ChannelNotConfigured,
            format!("{name} has no provider settings; add [messaging.{name}] to the config file"),
        ))
    };
    match channel.as_str() {
        "email" => {
            let email = messenger.settings().email.clone().ok_or_else(|| not_configured("email"))?;
            let smtp = kizuna_channels::SmtpChannel::new(&email).map_err(|m| {
                ApiError(KizunaError::new(Code::ChannelNotConfigured, format!("the email settings are unusable: {m}")))
            })?;
            let outcome = tokio::time::timeout(std::time::Duration::from_secs(15), smtp.test_connection()).await;
            Ok(axum::Json(match outcome {
                Ok(Ok(())) => json!({"ok": true, "message": format!("{}:{} answered", email.host, email.port)}),
                Ok(Err(message)) => json!({"ok": false, "message": message}),
                Err(_) => json!({"ok": false, "message": "no answer within 15 s"}),
            }))
        }
        "sms" | "line" | "webhook" => {
            let configured = match channel.as_str() {
                "sms" => messenger.settings().sms.is_some(),
                "line" => messenger.settings().line.is_some(),
                _ => messenger.settings().webhook.is_some(),
            };
            if !configured {
                return Err(not_configured(&channel));
            }
            Ok(axum::Json(json!({
                "ok": true,
                "message": "configured; this provider has no connection check (its API is only called to send)",
            })))
        }
        other => Err(invalid_param("channel", format!("'{other}' is not email, sms, line or webhook"))),
    }
}

// ---- suppressions ------------------------------------------------------------------------------------------

#[utoipa::path(get, path = "/api/suppressions", tag = "messages",
    responses((status = 200, description = "{suppressions}")), security(("admin_key" = [])))]
async fn list_suppressions(_: Admin, State(state): State<AppState>) -> ApiResult<axum::Json<Value>> {
    Ok(axum::Json(json!({"suppressions": state.store().messages().suppressions(1000)?})))
}

fn check_channel(channel: &str) -> ApiResult<()> {
    match kizuna_messaging::Channel::parse(channel) {
        Some(c) if c.reaches_a_person() => Ok(()),
        _ => Err(invalid_param("channel", "one of email, sms, line")),
    }
}

#[utoipa::path(put, path = "/api/suppressions/{channel}/{address}", tag = "messages",
    responses((status = 200, description = "Suppressed")), security(("admin_key" = [])))]
async fn add_suppression(
    _: Admin,
    State(state): State<AppState>,
    Path((channel, address)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    check_channel(&channel)?;
    state.store().messages().suppress(&channel, &address.trim().to_lowercase(), "manual", state.clock().now())?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(delete, path = "/api/suppressions/{channel}/{address}", tag = "messages",
    responses((status = 200, description = "No longer suppressed")), security(("admin_key" = [])))]
async fn remove_suppression(
    _: Admin,
    State(state): State<AppState>,
    Path((channel, address)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    check_channel(&channel)?;
    if state.store().messages().unsuppress(&channel, &address.trim().to_lowercase())? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError(KizunaError::new(Code::RouteNotFound, "the address is not suppressed")))
    }
}

// ---- provider webhooks -------------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StatusBody {
    message_id: String,
    /// hard_bounce, soft_bounce, complaint, delivered
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    detail: String,
}

/// Bounces, complaints and deliveries reported by a provider (or a relay's bounce processor), by message id.
#[utoipa::path(post, path = "/hooks/messages/status", tag = "messages",
    responses((status = 200, description = "{message_id, type: hard_bounce|soft_bounce|complaint|delivered, detail?}")), security(("admin_key" = [])))]
async fn provider_status(_: Admin, State(state): State<AppState>, body: Bytes) -> ApiResult<StatusCode> {
    let body: StatusBody = json_body(&body)?;
    messenger(&state)?.report_bounce(&body.message_id, &body.kind, &body.detail).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// An inbound SMS (Twilio posts `From` and `Body` as a form): STOP and its synonyms withdraw SMS consent.
/// Authenticated by Twilio's `X-Twilio-Signature` (over `public_url` + the path), or an admin Bearer key.
#[utoipa::path(post, path = "/hooks/sms/inbound", tag = "messages",
    responses((status = 200, description = "TwiML; STOP withdraws SMS consent (X-Twilio-Signature or admin key)")))]
async fn inbound_sms(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: axum::http::Uri,
    body: Bytes,
) -> ApiResult<Response> {
    let messenger = messenger(&state)?;
    if headers.contains_key(header::AUTHORIZATION) {
        crate::admin::authorize(&headers, &state)?;
    } else {
        let sms =
            messenger.settings().sms.as_ref().ok_or_else(|| {
                ApiError(KizunaError::new(Code::ChannelNotConfigured, "no SMS provider is configured"))
            })?;
        let signature = headers.get("x-twilio-signature").and_then(|v| v.to_str().ok()).unwrap_or_default();
        let url = format!("{}{}", messenger.settings().public_url.trim_end_matches('/'), uri);
        let params: Vec<(String, String)> =
            form_urlencoded::parse(&body).map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
        if !kizuna_channels::twilio_signature_valid(&sms.auth_token, &url, &params, signature) {
            return Err(ApiError(KizunaError::new(
                Code::InvalidApiKey,
                "send an admin Bearer key or a valid X-Twilio-Signature",
            )));
        }
    }
    let form: HashMap<String, String> = url_form(&body);
    let from = form.get("From").cloned().unwrap_or_default();
    let text = form.get("Body").cloned().unwrap_or_default();
    if from.is_empty() {
        return Err(ApiError(KizunaError::new(Code::MissingField, "the form needs From").with_field("From")));
    }
    let stopped = messenger.inbound_sms(&from, &text).await?;
    let reply = if stopped { "You are unsubscribed and will receive no more messages." } else { "" };
    let twiml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response>{}</Response>",
        if reply.is_empty() { String::new() } else { format!("<Message>{reply}</Message>") }
    );
    Ok(([(header::CONTENT_TYPE, "application/xml")], twiml).into_response())
}

fn url_form(body: &[u8]) -> HashMap<String, String> {
    form_urlencoded::parse(body).map(|(k, v)| (k.into_owned(), v.into_owned())).collect()
}

// ---- tracking (public) -------------------------------------------------------------------------------------

/// A transparent 1×1 GIF.
const PIXEL: &[u8] = &[
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff,
    0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x02,
    0x02, 0x44, 0x01, 0x00, 0x3b,
];

fn user_agent(headers: &HeaderMap) -> String {
    headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned()
}

#[utoipa::path(get, path = "/t/o/{token}", tag = "tracking",
    responses((status = 200, description = "A 1x1 GIF; records the open")))]
async fn open_pixel(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(token): Path<String>,
) -> ApiResult<Response> {
    messenger(&state)?.open(&token, &user_agent(&headers)).await?;
    Ok(([(header::CONTENT_TYPE, "image/gif"), (header::CACHE_CONTROL, "no-store, max-age=0")], PIXEL).into_response())
}

#[utoipa::path(get, path = "/t/c/{token}", tag = "tracking",
    responses((status = 200, description = "302 to the signed destination; 400 for a tampered token")))]
async fn click(State(state): State<AppState>, Path(token): Path<String>) -> ApiResult<Response> {
    let destination = messenger(&state)?.click(&token).await?;
    Ok((StatusCode::FOUND, [(header::LOCATION, destination)]).into_response())
}

/// RFC 8058: the mailbox provider POSTs `List-Unsubscribe=One-Click`; no page, no confirmation.
#[utoipa::path(post, path = "/t/u/{token}", tag = "tracking",
    responses((status = 200, description = "RFC 8058 one-click unsubscribe")))]
async fn unsubscribe_one_click(State(state): State<AppState>, Path(token): Path<String>) -> ApiResult<Response> {
    messenger(&state)?.unsubscribe(&token, None).await?;
    Ok(Html(page("Unsubscribed", "<p>You are unsubscribed. You will not receive these messages any more.</p>"))
        .into_response())
}

fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\">\
         <title>{title}</title><style>body{{font-family:system-ui,sans-serif;max-width:32rem;margin:3rem auto;padding:0 1rem}}\
         button{{font-size:1rem;padding:.5rem 1rem}}</style></head><body><h1>{title}</h1>{body}</body></html>"
    )
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// The link in the message body: a confirmation page (mail scanners follow links; a GET never unsubscribes).
#[utoipa::path(get, path = "/t/u/{token}", tag = "tracking",
    responses((status = 200, description = "A confirmation page (a GET never unsubscribes)")))]
async fn unsubscribe_page(State(state): State<AppState>, Path(token): Path<String>) -> ApiResult<Html<String>> {
    let messenger = messenger(&state)?;
    messenger.signer().verify(&token).map_err(|_| ApiError::from(MessagingError::BadToken))?;
    let token = escape(&token);
    Ok(Html(page(
        "Unsubscribe",
        &format!(
            "<form method=\"post\" action=\"/t/u/{token}\"><p>Stop receiving these messages?</p>\
             <button type=\"submit\">Unsubscribe</button></form>\
             <p><a href=\"/t/p/{token}\">Choose which messages you get instead</a></p>"
        ),
    )))
}

#[utoipa::path(get, path = "/t/p/{token}", tag = "tracking",
    responses((status = 200, description = "The preference page")))]
async fn preferences_page(State(state): State<AppState>, Path(token): Path<String>) -> ApiResult<Html<String>> {
    let messenger = messenger(&state)?;
    let (topics, channel) = messenger.preferences(&token)?;
    let token = escape(&token);
    let boxes: String = topics
        .iter()
        .map(|(topic, subscribed)| {
            let topic = escape(topic);
            format!(
                "<p><label><input type=\"checkbox\" name=\"topic\" value=\"{topic}\"{}> {topic}</label></p>",
                if *subscribed { " checked" } else { "" }
            )
        })
        .collect();
    Ok(Html(page(
        "Your preferences",
        &format!(
            "<form method=\"post\" action=\"/t/p/{token}\"><p>Messages by {channel} you want to receive:</p>{boxes}\
             <p><label><input type=\"checkbox\" name=\"all\" value=\"off\"> Unsubscribe from all {channel} marketing</label></p>\
             <button type=\"submit\">Save</button></form>",
            channel = escape(&channel)
        ),
    )))
}

#[utoipa::path(post, path = "/t/p/{token}", tag = "tracking",
    responses((status = 200, description = "Saves topics, or unsubscribes from all marketing on the channel")))]
async fn preferences_save(
    State(state): State<AppState>,
    Path(token): Path<String>,
    body: Bytes,
) -> ApiResult<Html<String>> {
    let messenger = messenger(&state)?;
    let pairs: Vec<(String, String)> =
        form_urlencoded::parse(&body).map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
    let decoded = url_form(&body);
    if decoded.get("all").is_some_and(|v| v == "off") {
        messenger.unsubscribe(&token, None).await?;
        return Ok(Html(page("Unsubscribed", "<p>You will receive no more marketing messages on this channel.</p>")));
    }
    let keep: Vec<String> = pairs
        .iter()
        .filter(|(k, _)| k == "topic")
        .map(|(_, v)| url_form(format!("v={v}").as_bytes()).remove("v").unwrap_or_default())
        .collect();
    messenger.set_topics(&token, &keep).await?;
    Ok(Html(page("Saved", "<p>Your preferences are saved.</p>")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_shown_keep_no_secrets() {
        let shown = without_secrets(json!({
            "host": "smtp.example.com", "password": "hunter2", "api_key": "k", "auth_token": "t",
            "url": "https://hooks.slack.example/services/T0/B1/XYZ?token=1",
            "base_url": "https://user:pass@sms.example.com/v1", "plain": "https://example.com",
            "nested": [{"secret": "s", "endpoint": "http://a:b@10.0.0.1:8080/x"}],
        }));
        assert_eq!(
            shown,
            json!({
                "host": "smtp.example.com",
                "url": "https://hooks.slack.example/…",
                "base_url": "https://sms.example.com/…",
                "plain": "https://example.com",
                "nested": [{"endpoint": "http://10.0.0.1:8080/…"}],
            })
        );
        assert_eq!(url_origin("no url here"), None);
        assert_eq!(url_origin("://x"), None);
    }
}
