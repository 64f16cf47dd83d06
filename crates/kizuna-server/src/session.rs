//! Signing in to the admin web app: email + password (Argon2id), a session cookie (HttpOnly, SameSite=Strict)
//! and a CSRF token per session that every change made with the cookie must echo as `X-CSRF-Token`. The admin
//! API keeps its Bearer keys; either one admits a request (see [`crate::admin::Admin`]).

use crate::{ApiError, ApiResult, AppState};
use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header, request::Parts};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::{DateTime, Duration, Utc};
use kizuna_store::admins::AdminSession;
use kizuna_types::{Code, KizunaError};
use parking_lot::Mutex;
use rand::RngCore;
use serde::Deserialize;
use serde_json::json;
use std::collections::HashMap;

pub const SESSION_COOKIE: &str = "kizuna_session";
pub const CSRF_HEADER: &str = "x-csrf-token";
const SESSION_LIFETIME_HOURS: i64 = 12;
const MAX_FAILURES: usize = 5;
const FAILURE_WINDOW_MINUTES: i64 = 15;
pub const MIN_PASSWORD_CHARS: usize = 10;

pub fn routes() -> Router<AppState> {
    Router::new().route("/api/session", get(current).post(sign_in).delete(sign_out))
}

/// Guards password checks: attempts per email (to slow down guessing; kept in memory, a restart forgets them)
/// and how many Argon2 checks run at once (each takes 19 MiB and tens of milliseconds of CPU).
pub(crate) struct SignInGuard {
    attempts: Mutex<HashMap<String, Vec<DateTime<Utc>>>>,
    hashing: tokio::sync::Semaphore,
}

/// Emails tracked at most; past this, emails without a recent attempt are forgotten first.
const MAX_TRACKED_EMAILS: usize = 10_000;

impl Default for SignInGuard {
    fn default() -> Self {
        SignInGuard { attempts: Mutex::new(HashMap::new()), hashing: tokio::sync::Semaphore::new(2) }
    }
}

impl SignInGuard {
    /// Counts an attempt before the password is checked, so attempts sent in parallel cannot slip past the
    /// limit; a successful sign-in clears the count.
    fn attempt(&self, email: &str, now: DateTime<Utc>) -> ApiResult<()> {
        let window = Duration::minutes(FAILURE_WINDOW_MINUTES);
        let mut attempts = self.attempts.lock();
        if attempts.len() >= MAX_TRACKED_EMAILS {
            attempts.retain(|_, times| times.iter().any(|at| now - *at < window));
        }
        let recent = attempts.entry(email.to_owned()).or_default();
        recent.retain(|at| now - *at < window);
        if recent.len() >= MAX_FAILURES {
            return Err(ApiError(KizunaError::new(
                Code::TooManyAttempts,
                format!(
                    "{MAX_FAILURES} failed sign-ins for this email in {FAILURE_WINDOW_MINUTES} minutes; wait and retry"
                ),
            )));
        }
        recent.push(now);
        Ok(())
    }

    fn succeeded(&self, email: &str) {
        self.attempts.lock().remove(email);
    }
}

/// Emails are compared trimmed and lower-cased.
pub fn normalize_email(email: &str) -> Result<String, KizunaError> {
    let email = email.trim().to_lowercase();
    let valid = email.len() <= 254
        && email.split_once('@').is_some_and(|(local, domain)| !local.is_empty() && domain.contains('.'))
        && !email.chars().any(char::is_whitespace);
    if valid {
        Ok(email)
    } else {
        Err(KizunaError::new(Code::InvalidField, "an admin is identified by an email address such as ops@example.com")
            .with_field("email"))
    }
}

/// Hashes a password with Argon2id (the crate's default parameters: 19 MiB, 2 passes) and a random salt, in
/// the PHC string format.
pub fn hash_password(password: &str) -> Result<String, KizunaError> {
    let chars = password.chars().count();
    if chars < MIN_PASSWORD_CHARS || password.len() > 1024 {
        return Err(KizunaError::new(
            Code::InvalidField,
            format!("a password has {MIN_PASSWORD_CHARS} to 1024 characters"),
        )
        .with_field("password"));
    }
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| KizunaError::internal(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| KizunaError::internal(format!("hashing the password: {e}")))
}

fn password_matches(stored_hash: &str, password: &str) -> bool {
    PasswordHash::new(stored_hash)
        .is_ok_and(|hash| Argon2::default().verify_password(password.as_bytes(), &hash).is_ok())
}

fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// Byte-wise comparison that takes the same time wherever the first difference is.
fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The session the request's cookie opens, if any (`None` without a cookie; an error when it is stale).
fn session_of(headers: &HeaderMap, state: &AppState) -> ApiResult<Option<(String, AdminSession)>> {
    let Some(token) = cookie_value(headers, SESSION_COOKIE) else { return Ok(None) };
    match state.store().admins().session(token, state.clock().now())? {
        Some(session) => Ok(Some((token.to_owned(), session))),
        None => Err(ApiError(KizunaError::new(Code::InvalidCredentials, "the session has ended; sign in again"))),
    }
}

/// Admits a request by its session cookie; changes (anything but GET/HEAD/OPTIONS) must carry the session's CSRF
/// token. `Ok(false)` when the request has no session cookie at all.
pub(crate) fn authorize_session(parts: &Parts, state: &AppState) -> ApiResult<bool> {
    let Some((_, session)) = session_of(&parts.headers, state)? else { return Ok(false) };
    if !matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS) {
        let sent = parts.headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("");
        if !same_secret(sent, &session.csrf_token) {
            return Err(ApiError(KizunaError::new(
                Code::CsrfTokenMismatch,
                "send the session's CSRF token (from GET /api/session) as X-CSRF-Token",
            )));
        }
    }
    Ok(true)
}

/// For reads that check credentials themselves: whether the cookie opens a live session.
pub(crate) fn signed_in(headers: &HeaderMap, state: &AppState) -> ApiResult<bool> {
    Ok(session_of(headers, state)?.is_some())
}

/// The public URL is https: the cookie is then never sent over plain HTTP.
fn served_over_https(state: &AppState) -> bool {
    state.messenger().is_some_and(|m| m.settings().public_url.starts_with("https://"))
}

fn session_cookie(token: &str, max_age_seconds: i64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    let value =
        format!("{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age_seconds}{secure}");
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static("kizuna_session=; Max-Age=0"))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignIn {
    email: String,
    password: String,
}

/// Sign in with email and password: sets the session cookie and returns the CSRF token.
#[utoipa::path(post, path = "/api/session", tag = "session",
    request_body(content = String, description = "{email, password}", content_type = "application/json"),
    responses((status = 200, description = "Signed in: email, csrf_token, expires_at; the cookie is set"),
        (status = 401, description = "Wrong email or password"), (status = 429, description = "Too many failures")))]
async fn sign_in(State(state): State<AppState>, headers: HeaderMap, body: axum::body::Bytes) -> ApiResult<Response> {
    // A cross-site form can post text/plain that happens to parse as JSON ("login CSRF": signing the victim in
    // as the attacker); browsers cannot send application/json cross-site without CORS, and they say where a
    // request comes from.
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(';').next().is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json")));
    if !json {
        return Err(ApiError(KizunaError::new(
            Code::UnsupportedMediaType,
            "sign in with Content-Type: application/json",
        )));
    }
    if headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|site| !matches!(site, "same-origin" | "none"))
    {
        return Err(ApiError(KizunaError::new(Code::CsrfTokenMismatch, "sign in from the Kizuna app itself")));
    }
    let body: SignIn = serde_json::from_slice(&body).map_err(|e| {
        let code = if e.is_data() { Code::InvalidField } else { Code::MalformedJson };
        ApiError(KizunaError::new(code, format!("send {{\"email\", \"password\"}}: {e}")))
    })?;
    let email = normalize_email(&body.email).map_err(ApiError)?;
    let now = state.clock().now();
    state.inner.sign_ins.attempt(&email, now)?;
    let admin = state.store().admins().admin_by_email(&email)?;
    let password = body.password;
    let _permit = state
        .inner
        .sign_ins
        .hashing
        .acquire()
        .await
        .map_err(|_| ApiError(KizunaError::new(Code::Unavailable, "the server is shutting down")))?;
    // The KDF costs tens of milliseconds of CPU: off the async threads. Unknown emails are hashed against a fixed
    // hash too, so the answer takes as long whether or not the email exists.
    let (admin, matches) = tokio::task::spawn_blocking(move || {
        let matches = match &admin {
            Some((_, hash)) => password_matches(hash, &password),
            None => {
                password_matches(UNKNOWN_USER_HASH, &password);
                false
            }
        };
        (admin, matches)
    })
    .await
    .map_err(|e| ApiError(KizunaError::internal(e.to_string())))?;
    let Some((admin, _)) = admin.filter(|_| matches) else {
        tracing::warn!(email, "failed admin sign-in");
        return Err(ApiError(KizunaError::new(Code::InvalidCredentials, "the email or password is wrong")));
    };
    state.inner.sign_ins.succeeded(&email);
    let token = random_token();
    let csrf = random_token();
    let expires_at = now + Duration::hours(SESSION_LIFETIME_HOURS);
    state.store().admins().create_session(admin.id, &token, &csrf, now, expires_at)?;
    tracing::info!(email = admin.email, "admin signed in");
    let mut response =
        axum::Json(json!({"email": admin.email, "csrf_token": csrf, "expires_at": expires_at})).into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, session_cookie(&token, SESSION_LIFETIME_HOURS * 3600, served_over_https(&state)));
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// A hash of a random password nobody knows, verified when the email is unknown.
const UNKNOWN_USER_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$3gWbtMV5oUWrS3hYcxmSkVfDzKKw8LoXWmGjJdPxfBY";

/// Who is signed in, with the session's CSRF token (the web app calls this on load).
#[utoipa::path(get, path = "/api/session", tag = "session",
    responses((status = 200, description = "email, csrf_token, expires_at"), (status = 401, description = "Not signed in")))]
async fn current(State(state): State<AppState>, headers: HeaderMap) -> ApiResult<Response> {
    let Some((_, session)) = session_of(&headers, &state)? else {
        return Err(ApiError(KizunaError::new(Code::InvalidCredentials, "not signed in")));
    };
    let mut response = axum::Json(json!({
        "email": session.admin.email,
        "csrf_token": session.csrf_token,
        "expires_at": session.expires_at,
    }))
    .into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// Sign out: ends the session and clears the cookie (needs the CSRF token, like every change).
#[utoipa::path(delete, path = "/api/session", tag = "session",
    responses((status = 204, description = "Signed out"), (status = 403, description = "CSRF token missing")))]
async fn sign_out(State(state): State<AppState>, parts: Parts) -> ApiResult<Response> {
    // An ended session just gets its cookie cleared.
    if let Ok(Some((token, _))) = session_of(&parts.headers, &state) {
        authorize_session(&parts, &state)?;
        state.store().admins().delete_session(&token, state.clock().now())?;
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    response.headers_mut().insert(header::SET_COOKIE, session_cookie("", 0, served_over_https(&state)));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_only_their_password() {
        let hash = hash_password("correct horse battery").expect("hash");
        assert!(hash.starts_with("$argon2id$"));
        assert!(password_matches(&hash, "correct horse battery"));
        assert!(!password_matches(&hash, "correct horse battery!"));
        assert_ne!(hash, hash_password("correct horse battery").expect("hash"), "salts differ");
        assert!(hash_password("short").is_err());
        assert!(PasswordHash::new(UNKNOWN_USER_HASH).is_ok());
    }

    #[test]
    fn emails_are_normalised_and_checked() {
        assert_eq!(normalize_email("  Ops@Example.COM ").expect("valid"), "ops@example.com");
        assert!(normalize_email("no-at-sign").is_err());
        assert!(normalize_email("a@localhost").is_err());
    }

    #[test]
    fn cookies_are_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, HeaderValue::from_static("a=1; kizuna_session=abc; b=2"));
        assert_eq!(cookie_value(&headers, SESSION_COOKIE), Some("abc"));
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "ab"));
    }
}
