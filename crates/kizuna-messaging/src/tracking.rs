//! Tracking links that cannot be forged: every open pixel, click redirect and unsubscribe link carries a token
//! signed with the store's secret (HMAC-SHA256). A click token holds its destination, so the redirect only ever
//! goes where the brand's own message pointed — never an open redirect.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "k", rename_all = "snake_case")]
pub enum Token {
    /// `m`: the message id.
    Open {
        m: String,
    },
    /// `u`: the destination.
    Click {
        m: String,
        u: String,
    },
    Unsubscribe {
        m: String,
    },
}

impl Token {
    pub fn message_id(&self) -> &str {
        match self {
            Token::Open { m } | Token::Click { m, .. } | Token::Unsubscribe { m } => m,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the link is malformed")]
    Malformed,
    #[error("the link's signature does not match")]
    BadSignature,
}

/// Keyed once: each message signs several links, and keying HMAC hashes two blocks.
#[derive(Clone)]
pub struct Signer {
    keyed: HmacSha256,
}

impl Signer {
    pub fn new(secret: &[u8]) -> Signer {
        // HMAC takes keys of any length.
        let keyed = HmacSha256::new_from_slice(secret)
            .unwrap_or_else(|_| HmacSha256::new_from_slice(b"kizuna").expect("static key"));
        Signer { keyed }
    }

    fn mac(&self) -> HmacSha256 {
        self.keyed.clone()
    }

    pub fn sign(&self, token: &Token) -> String {
        let payload = serde_json::to_vec(token).unwrap_or_default();
        let mut mac = self.mac();
        mac.update(&payload);
        let signature = mac.finalize().into_bytes();
        format!("{}.{}", URL_SAFE_NO_PAD.encode(payload), URL_SAFE_NO_PAD.encode(&signature[..16]))
    }

    pub fn verify(&self, text: &str) -> Result<Token, TokenError> {
        let (payload, signature) = text.split_once('.').ok_or(TokenError::Malformed)?;
        let payload = URL_SAFE_NO_PAD.decode(payload).map_err(|_| TokenError::Malformed)?;
        let signature = URL_SAFE_NO_PAD.decode(signature).map_err(|_| TokenError::Malformed)?;
        let mut mac = self.mac();
        mac.update(&payload);
        mac.verify_truncated_left(&signature).map_err(|_| TokenError::BadSignature)?;
        if signature.len() != 16 {
            return Err(TokenError::BadSignature);
        }
        serde_json::from_slice(&payload).map_err(|_| TokenError::Malformed)
    }
}

/// The URLs a message's tracking points at.
pub struct Links<'a> {
    pub signer: &'a Signer,
    /// The public base URL of this Kizuna (`https://crm.brand.jp`).
    pub base_url: &'a str,
    pub message_id: &'a str,
}

impl Links<'_> {
    fn base(&self) -> &str {
        self.base_url.trim_end_matches('/')
    }

    pub fn open_url(&self) -> String {
        format!("{}/t/o/{}", self.base(), self.signer.sign(&Token::Open { m: self.message_id.to_owned() }))
    }

    pub fn click_url(&self, destination: &str) -> String {
        let token = Token::Click { m: self.message_id.to_owned(), u: destination.to_owned() };
        format!("{}/t/c/{}", self.base(), self.signer.sign(&token))
    }

    pub fn unsubscribe_url(&self) -> String {
        self.unsubscribe_urls().0
    }

    pub fn preferences_url(&self) -> String {
        self.unsubscribe_urls().1
    }

    /// The one-click unsubscribe URL and the preference page's: one token, signed once, serves both.
    pub fn unsubscribe_urls(&self) -> (String, String) {
        let token = self.signer.sign(&Token::Unsubscribe { m: self.message_id.to_owned() });
        (format!("{}/t/u/{token}", self.base()), format!("{}/t/p/{token}", self.base()))
    }

    /// Rewrites every `href="http…"` to its click URL (unsubscribe and preference links stay direct, so a
    /// mail scanner following links never counts as a click on them) and appends the open pixel.
    pub fn track_html(&self, html: &str) -> String {
        let mut out = String::with_capacity(html.len() + 256);
        let mut rest = html;
        let own = format!("{}/t/", self.base());
        while let Some(at) = find_href(rest) {
            let (before, after) = rest.split_at(at.start);
            out.push_str(before);
            let url = &after[..at.len];
            if (url.starts_with("http://") || url.starts_with("https://")) && !url.starts_with(&own) {
                let destination = url.replace("&amp;", "&");
                out.push_str(&self.click_url(&destination));
            } else {
                out.push_str(url);
            }
            rest = &after[at.len..];
        }
        out.push_str(rest);
        let pixel = format!(
            "<img src=\"{}\" width=\"1\" height=\"1\" alt=\"\" style=\"display:block;border:0\">",
            self.open_url()
        );
        match out.rfind("</body>") {
            Some(end) => out.insert_str(end, &pixel),
            None => out.push_str(&pixel),
        }
        out
    }

    /// Rewrites bare URLs in plain text (SMS, LINE, text email) to click URLs.
    pub fn track_text(&self, text: &str) -> String {
        let own = format!("{}/t/", self.base());
        text.split_inclusive(char::is_whitespace)
            .map(|word| {
                let trimmed = word.trim_end();
                let url_end = trimmed.trim_end_matches(['.', ',', ')', '!', '?', '」', '。']).len();
                let url = &trimmed[..url_end];
                if (url.starts_with("https://") || url.starts_with("http://")) && !url.starts_with(&own) {
                    format!("{}{}", self.click_url(url), &word[url_end..])
                } else {
                    word.to_owned()
                }
            })
            .collect()
    }
}

struct Span {
    start: usize,
    len: usize,
}

/// Finds the next `href="…"` value (either quote).
fn find_href(html: &str) -> Option<Span> {
    let lower = html.to_ascii_lowercase();
    let mut from = 0;
    while let Some(found) = lower[from..].find("href=") {
        let value_start = from + found + 5;
        let quote = html[value_start..].chars().next()?;
        if quote == '"' || quote == '\'' {
            let start = value_start + 1;
            let len = html[start..].find(quote)?;
            return Some(Span { start, len });
        }
        from = value_start;
    }
    None
}

/// Opens by machines rather than people: privacy proxies that prefetch every image (Apple Mail Privacy
/// Protection, Gmail's and Yahoo's image proxies) and security scanners that open mail seconds after it lands.
pub fn is_machine_open(user_agent: &str, seconds_after_send: Option<i64>) -> bool {
    let ua = user_agent.to_ascii_lowercase();
    const PROXIES: &[&str] = &[
        "googleimageproxy",
        "yahoomailproxy",
        "ymailproxy",
        "apple mail privacy",
        "barracuda",
        "proofpoint",
        "mimecast",
    ];
    if PROXIES.iter().any(|p| ua.contains(p)) {
        return true;
    }
    // Apple's proxy presents a bare "Mozilla/5.0" without a platform.
    if ua.trim() == "mozilla/5.0" || ua.is_empty() {
        return true;
    }
    seconds_after_send.is_some_and(|s| (0..=2).contains(&s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_tampering_is_caught() {
        let signer = Signer::new(b"secret");
        let token = Token::Click { m: "m1".into(), u: "https://shop.example/p/1".into() };
        let text = signer.sign(&token);
        assert_eq!(signer.verify(&text), Ok(token));
        // Another destination with the old signature.
        let forged = Token::Click { m: "m1".into(), u: "https://evil.example".into() };
        let forged_payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap_or_default());
        let signature = text.split_once('.').map(|(_, s)| s).unwrap_or_default();
        assert_eq!(signer.verify(&format!("{forged_payload}.{signature}")), Err(TokenError::BadSignature));
        assert_eq!(Signer::new(b"other").verify(&text), Err(TokenError::BadSignature));
        assert_eq!(signer.verify("garbage"), Err(TokenError::Malformed));
        assert_eq!(signer.verify("a.b"), Err(TokenError::Malformed));
    }

    #[test]
    fn html_links_are_wrapped_and_the_pixel_added() {
        let signer = Signer::new(b"k");
        let links = Links { signer: &signer, base_url: "https://crm.example/", message_id: "m9" };
        let html = "<body><a href=\"https://shop.example/a?x=1&amp;y=2\">A</a> <a href='mailto:x@y'>m</a> \
                    <a href=\"https://crm.example/t/u/abc\">unsub</a></body>";
        let tracked = links.track_html(html);
        assert!(tracked.contains("href=\"https://crm.example/t/c/"));
        assert!(tracked.contains("href='mailto:x@y'"));
        assert!(tracked.contains("https://crm.example/t/u/abc"));
        assert!(tracked.contains("/t/o/") && tracked.ends_with("</body>"));
        let click = tracked.split("/t/c/").nth(1).and_then(|s| s.split('"').next()).unwrap_or_default();
        assert_eq!(
            signer.verify(click),
            Ok(Token::Click { m: "m9".into(), u: "https://shop.example/a?x=1&y=2".into() })
        );
        let text = links.track_text("Your cart: https://shop.example/cart. Bye");
        assert!(text.starts_with("Your cart: https://crm.example/t/c/") && text.ends_with(". Bye"), "{text}");
    }

    #[test]
    fn machine_opens() {
        assert!(is_machine_open("Mozilla/5.0 (Windows NT 5.1) GoogleImageProxy", Some(600)));
        assert!(is_machine_open("Mozilla/5.0", None));
        assert!(is_machine_open("Mozilla/5.0 (iPhone) Mobile", Some(1)));
        assert!(!is_machine_open("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0) Mobile/15E148", Some(3600)));
    }
}
