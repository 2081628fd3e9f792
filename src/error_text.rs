//! Errors as one line of text for logs and chat replies.

/// The error and its causes, `: `-separated: reqwest's top-level message alone ("error sending
/// request") hides the cause that tells an operator what to fix ("connection refused").
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
