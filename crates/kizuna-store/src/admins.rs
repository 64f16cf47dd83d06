//! What the admin web app keeps: the people who may sign in and their sessions. Passwords
//! arrive already hashed (the server owns the KDF); session tokens are stored as SHA-256 hashes so a copy of the
//! data directory does not hand out live sessions.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::StoreResult;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AdminUser {
    pub id: i64,
    pub email: String,
    pub created_at: DateTime<Utc>,
    pub last_login_at: Option<DateTime<Utc>>,
}

/// A live session: who it belongs to and the CSRF token its pages must send back on every change.
#[derive(Debug, Clone, PartialEq)]
pub struct AdminSession {
    pub admin: AdminUser,
    pub csrf_token: String,
    pub expires_at: DateTime<Utc>,
}

pub trait AdminStore: Send + Sync {
    /// Creates an admin; `AlreadyExists` when the (normalised) email is taken.
    fn create_admin(&self, email: &str, password_hash: &str, now: DateTime<Utc>) -> StoreResult<AdminUser>;
    /// Replaces an admin's password hash and ends all of their sessions; false when there is no such admin.
    fn set_admin_password(&self, email: &str, password_hash: &str) -> StoreResult<bool>;
    /// The admin and their password hash.
    fn admin_by_email(&self, email: &str) -> StoreResult<Option<(AdminUser, String)>>;
    fn list_admins(&self) -> StoreResult<Vec<AdminUser>>;

    /// Opens a session for `token` (stored hashed) and records the login time.
    fn create_session(
        &self,
        admin_id: i64,
        token: &str,
        csrf_token: &str,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> StoreResult<()>;
    /// The session `token` opens, if it exists and has not expired at `now`.
    fn session(&self, token: &str, now: DateTime<Utc>) -> StoreResult<Option<AdminSession>>;
    /// Ends a session (sign out); also drops every expired session.
    fn delete_session(&self, token: &str, now: DateTime<Utc>) -> StoreResult<()>;
}
