//! Text for people: sizes, URLs without credentials, error causes, and
//! what a server said, bounded.

use url::Url;

/// A byte count as people write it: "1 MiB", "64 KiB", "300 bytes".
pub(super) fn human_size(bytes: &usize) -> String {
    match *bytes {
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{} MiB", b >> 20),
        b if b >= 1 << 10 && b % (1 << 10) == 0 => format!("{} KiB", b >> 10),
        b => format!("{b} bytes"),
    }
}

/// The URL with any user:password@ replaced, for error messages.
pub fn redact_userinfo(url: &Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.to_string()
}

/// reqwest's top-level message is generic ("error sending request"); the
/// cause (connection refused, certificate unknown) is what a person needs.
pub(super) fn source_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Text quoted from a server, made safe to show: control characters
/// removed and cut to `max` characters.
pub fn bounded_text(text: &str, max: usize) -> String {
    let cleaned: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let cleaned = cleaned.trim();
    if cleaned.chars().count() <= max {
        cleaned.to_string()
    } else {
        let cut: String = cleaned.chars().take(max).collect();
        format!("{cut}…")
    }
}
