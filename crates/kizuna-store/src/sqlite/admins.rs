//! SQLite implementation of [`AdminStore`].

use super::{CachedSql, SqliteStore, from_ms, hash_key, ms};
use crate::admins::{AdminSession, AdminStore, AdminUser};
use crate::{StoreError, StoreResult};
use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, Row, params};

fn admin_row(r: &Row<'_>) -> rusqlite::Result<AdminUser> {
    Ok(AdminUser {
        id: r.get(0)?,
        email: r.get(1)?,
        created_at: from_ms(r.get(2)?),
        last_login_at: r.get::<_, Option<i64>>(3)?.map(from_ms),
    })
}

impl AdminStore for SqliteStore {
    fn create_admin(&self, email: &str, password_hash: &str, now: DateTime<Utc>) -> StoreResult<AdminUser> {
        let id = self.with_writer(|conn| {
            let inserted = conn.execute_cached(
                "INSERT INTO admin_users (email, password_hash, created_at) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (email) DO NOTHING",
                params![email, password_hash, ms(now)],
            )?;
            if inserted == 0 {
                return Err(StoreError::AlreadyExists(format!("admin '{email}'")));
            }
            Ok(conn.last_insert_rowid())
        })?;
        Ok(AdminUser { id, email: email.to_owned(), created_at: now, last_login_at: None })
    }

    fn set_admin_password(&self, email: &str, password_hash: &str) -> StoreResult<bool> {
        self.with_writer(|conn| {
            let tx = conn.transaction()?;
            let id: Option<i64> =
                tx.query_row_cached("SELECT id FROM admin_users WHERE email = ?1", [email], |r| r.get(0)).optional()?;
            let Some(id) = id else { return Ok(false) };
            tx.execute_cached("UPDATE admin_users SET password_hash = ?1 WHERE id = ?2", params![password_hash, id])?;
            tx.execute_cached("DELETE FROM admin_sessions WHERE admin_id = ?1", [id])?;
            tx.commit()?;
            Ok(true)
        })
    }

    fn admin_by_email(&self, email: &str) -> StoreResult<Option<(AdminUser, String)>> {
        self.with_reader(|conn| {
            Ok(conn
                .query_row_cached(
                    "SELECT id, email, created_at, last_login_at, password_hash FROM admin_users WHERE email = ?1",
                    [email],
                    |r| Ok((admin_row(r)?, r.get(4)?)),
                )
                .optional()?)
        })
    }

    fn list_admins(&self) -> StoreResult<Vec<AdminUser>> {
        self.with_reader(|conn| {
            let mut stmt = conn.prepare("SELECT id, email, created_at, last_login_at FROM admin_users ORDER BY id")?;
            let rows = stmt.query_map([], admin_row)?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    fn create_session(
        &self,
        admin_id: i64,
        token: &str,
        csrf_token: &str,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> StoreResult<()> {
        self.with_writer(|conn| {
            let tx = conn.transaction()?;
            tx.execute_cached(
                "INSERT INTO admin_sessions (token_hash, admin_id, csrf_token, created_at, expires_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![hash_key(token), admin_id, csrf_token, ms(now), ms(expires_at)],
            )?;
            tx.execute_cached("UPDATE admin_users SET last_login_at = ?1 WHERE id = ?2", params![ms(now), admin_id])?;
            tx.commit()?;
            Ok(())
        })
    }

    fn session(&self, token: &str, now: DateTime<Utc>) -> StoreResult<Option<AdminSession>> {
        self.with_reader(|conn| {
            Ok(conn
                .query_row_cached(
                    "SELECT u.id, u.email, u.created_at, u.last_login_at, s.csrf_token, s.expires_at \
                     FROM admin_sessions s JOIN admin_users u ON u.id = s.admin_id \
                     WHERE s.token_hash = ?1 AND s.expires_at > ?2",
                    params![hash_key(token), ms(now)],
                    |r| {
                        Ok(AdminSession { admin: admin_row(r)?, csrf_token: r.get(4)?, expires_at: from_ms(r.get(5)?) })
                    },
                )
                .optional()?)
        })
    }

    fn delete_session(&self, token: &str, now: DateTime<Utc>) -> StoreResult<()> {
        self.with_writer(|conn| {
            conn.execute_cached(
                "DELETE FROM admin_sessions WHERE token_hash = ?1 OR expires_at <= ?2",
                params![hash_key(token), ms(now)],
            )?;
            Ok(())
        })
    }
}
