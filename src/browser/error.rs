//! What can go wrong with one browse, in words a chat reply can show.

use crate::guard::Refusal;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BrowseError {
    #[error("that is not a web address ({0})")]
    InvalidUrl(String),
    /// The guard refused the page or a redirect (blocked address, local name, other scheme).
    #[error("blocked: {0}")]
    Blocked(Refusal),
    #[error("{host} could not be found (DNS: {detail})")]
    Dns { host: String, detail: String },
    #[error("{host} cannot be reached: {detail}")]
    Unreachable { host: String, detail: String },
    #[error("the page did not load within {0} s")]
    Timeout(u64),
    #[error("the server answered HTTP {status} for {url}")]
    Http { status: u16, url: String },
    #[error("{url} is not a web page (it is {content_type})")]
    NotHtml { url: String, content_type: String },
    #[error("the page is larger than the limit of {limit} bytes")]
    TooBig { limit: u64 },
    #[error("the browser tab crashed while loading the page")]
    Crashed,
    #[error("cancelled")]
    Cancelled,
    #[error("the browser is unavailable: {0}")]
    Unavailable(String),
}

impl From<Refusal> for BrowseError {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::Dns { host, detail } => Self::Dns { host, detail },
            other => Self::Blocked(other),
        }
    }
}

impl From<super::cdp::CdpError> for BrowseError {
    fn from(e: super::cdp::CdpError) -> Self {
        Self::Unavailable(e.to_string())
    }
}
