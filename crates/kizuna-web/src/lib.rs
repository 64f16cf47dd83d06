//! The admin web app: plain HTML, CSS and JavaScript modules under `assets/`, embedded in the binary at build
//! time. There is no front-end build step on purpose — a fresh clone builds with cargo alone, and the browser
//! runs the files as written (ES modules, no framework, no bundler). The server routes `/admin/…` here
//! (`kizuna-server/src/web.rs`); every page talks to the same JSON API that scripts use.

use rust_embed::Embed;
use std::borrow::Cow;

#[derive(Embed)]
#[folder = "assets/"]
#[exclude = "*.test.mjs"]
struct Assets;

/// One embedded file: its bytes and content type.
pub struct Asset {
    pub bytes: Cow<'static, [u8]>,
    pub content_type: &'static str,
}

/// The file at `path` (relative to `assets/`), if there is one.
pub fn asset(path: &str) -> Option<Asset> {
    let file = Assets::get(path)?;
    Some(Asset { bytes: file.data, content_type: content_type(path) })
}

/// The page every client-side route loads.
pub fn index_html() -> Option<Asset> {
    asset("index.html")
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("json") => "application/json",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_app_shell_and_its_modules_are_embedded() {
        let index = index_html().expect("index.html");
        assert_eq!(index.content_type, "text/html; charset=utf-8");
        let html = String::from_utf8_lossy(&index.bytes);
        assert!(html.contains("js/app.js"), "index.html loads the app module");
        for module in ["js/app.js", "js/api.js", "js/i18n.js", "js/charts.js", "js/locales/en.js", "js/locales/ja.js"] {
            let file = asset(module).unwrap_or_else(|| panic!("{module} is embedded"));
            assert_eq!(file.content_type, "text/javascript; charset=utf-8");
        }
        assert!(asset("js/charts.test.mjs").is_none(), "tests stay out of the binary");
        assert!(asset("../Cargo.toml").is_none());
    }

    /// Keys a catalogue defines: lines of the form `  'key': …`.
    fn catalogue_keys(path: &str) -> std::collections::BTreeSet<String> {
        let file = asset(path).unwrap_or_else(|| panic!("{path} is embedded"));
        String::from_utf8_lossy(&file.bytes)
            .lines()
            .filter_map(|line| line.trim_start().strip_prefix('\'')?.split_once("':").map(|(key, _)| key.to_owned()))
            .collect()
    }

    /// Literal keys the modules ask for: `t('key'…`. Keys built at run time (`t(`stage.${s}`)`) are not literal.
    fn used_keys() -> std::collections::BTreeSet<String> {
        let mut keys = std::collections::BTreeSet::new();
        for path in Assets::iter().filter(|p| p.ends_with(".js") && !p.contains("locales/")) {
            let Some(file) = asset(&path) else { continue };
            let source = String::from_utf8_lossy(&file.bytes).into_owned();
            for (at, _) in source.match_indices("t('") {
                let preceded_by_word =
                    source[..at].chars().next_back().is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '.');
                if preceded_by_word {
                    continue;
                }
                if let Some(end) = source[at + 3..].find('\'') {
                    keys.insert(source[at + 3..at + 3 + end].to_owned());
                }
            }
        }
        keys
    }

    #[test]
    fn every_string_the_pages_use_is_in_the_english_catalogue_and_japanese_adds_none_of_its_own() {
        let english = catalogue_keys("js/locales/en.js");
        let japanese = catalogue_keys("js/locales/ja.js");
        let used = used_keys();
        assert!(
            used.len() > 100 && english.len() > 100,
            "the scan finds the keys ({} used, {} defined)",
            used.len(),
            english.len()
        );
        let missing: Vec<_> = used.difference(&english).collect();
        assert!(missing.is_empty(), "keys used but missing from en.js: {missing:?}");
        let stray: Vec<_> = japanese.difference(&english).collect();
        assert!(stray.is_empty(), "keys in ja.js that en.js lacks: {stray:?}");
        let untranslated: Vec<_> = english.difference(&japanese).filter(|k| !k.starts_with("op.")).collect();
        assert!(untranslated.is_empty(), "strings without a Japanese translation: {untranslated:?}");
    }
}
