//! `PlankaError`: what went wrong talking to Planka, in words a chat user can act on.

use std::time::Duration;

/// A failed Planka call. API refusals keep Planka's `code`, `message` and HTTP status so callers
/// can branch on them and operators can match them to Planka's logs.
#[derive(Debug, thiserror::Error)]
pub enum PlankaError {
    #[error("Planka is not configured: set planka.api_key, or planka.username and planka.password")]
    NotConfigured,
    #[error("Planka at {url} cannot be reached: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("Planka did not answer within {0:?}")]
    Timeout(Duration),
    #[error("Planka is unavailable right now (HTTP {status}{}), try again later", detail(code, message))]
    Unavailable { status: u16, code: String, message: String },
    #[error(
        "Planka refused the agent's credentials{}; check planka.api_key or planka.username and planka.password",
        detail(code, message)
    )]
    Unauthorized { status: u16, code: String, message: String },
    #[error("Planka does not allow the agent to do this{}", detail(code, message))]
    Forbidden { status: u16, code: String, message: String },
    #[error("Planka could not find it{}", detail(code, message))]
    NotFound { status: u16, code: String, message: String },
    #[error("Planka rejected the request as invalid{}", detail(code, message))]
    Invalid { status: u16, code: String, message: String },
    /// Any other refusal (for instance 409 conflicts).
    #[error("Planka refused the request (HTTP {status}{})", detail(code, message))]
    Rejected { status: u16, code: String, message: String },
    #[error("this Planka server is not supported ({0}); the agent needs Planka v2")]
    Unsupported(String),
    #[error("Planka gave an answer the agent does not understand: {0}")]
    Response(String),
    #[error("internal error preparing a Planka request: {0}")]
    Build(String),
}

/// `": E_CODE, message"` for the Display texts, or nothing when Planka said nothing.
fn detail(code: &str, message: &str) -> String {
    match (code.is_empty(), message.is_empty()) {
        (true, true) => String::new(),
        (false, true) => format!(": {code}"),
        (true, false) => format!(": {message}"),
        (false, false) => format!(": {message} ({code})"),
    }
}

impl PlankaError {
    /// The error for a non-2xx answer, from Planka's `{"code", "message"}` body when there is one
    /// (a proxy in front of Planka may answer with HTML or nothing).
    pub(crate) fn from_response(status: u16, body: &[u8]) -> Self {
        #[derive(serde::Deserialize)]
        struct Body {
            code: Option<String>,
            message: Option<String>,
        }
        let (code, message) = match serde_json::from_slice::<Body>(body) {
            Ok(b) => (b.code.unwrap_or_default(), b.message.unwrap_or_default()),
            Err(_) => (String::new(), String::from_utf8_lossy(body).trim().chars().take(200).collect()),
        };
        match status {
            401 => Self::Unauthorized { status, code, message },
            403 => Self::Forbidden { status, code, message },
            404 => Self::NotFound { status, code, message },
            400 | 422 => Self::Invalid { status, code, message },
            429 | 500.. => Self::Unavailable { status, code, message },
            _ => Self::Rejected { status, code, message },
        }
    }

    /// What failed, in words for a chat room: no address, no text of Planka's (those go to the log).
    pub fn public(&self) -> String {
        match self {
            Self::NotConfigured => "Planka is not configured".into(),
            Self::Unreachable { .. } => "Planka cannot be reached".into(),
            Self::Timeout(t) => format!("Planka did not answer within {} s", t.as_secs()),
            Self::Unavailable { status, .. } => format!("Planka is unavailable right now (HTTP {status})"),
            Self::Unauthorized { .. } => "Planka refused the agent's credentials".into(),
            Self::Forbidden { .. } => "Planka does not allow the agent to do this".into(),
            Self::NotFound { .. } => "Planka could not find it".into(),
            Self::Invalid { .. } => "Planka rejected the request as invalid".into(),
            Self::Rejected { status, .. } => format!("Planka refused the request (HTTP {status})"),
            Self::Unsupported(_) => "this Planka server is not supported (the agent needs Planka v2)".into(),
            Self::Response(_) | Self::Build(_) => "Planka gave an answer the agent does not understand".into(),
        }
    }

    /// Worth trying again later (Planka is down or overloaded), as opposed to a refusal.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unreachable { .. } | Self::Timeout(_) | Self::Unavailable { .. })
    }

    /// The HTTP status Planka answered with, for API refusals.
    pub fn status(&self) -> Option<u16> {
        self.api().map(|(status, _, _)| status)
    }

    /// Planka's error code (`E_NOT_FOUND`, ...), for API refusals.
    pub fn code(&self) -> Option<&str> {
        self.api().map(|(_, code, _)| code)
    }

    /// Planka's error message, for API refusals.
    pub fn message(&self) -> Option<&str> {
        self.api().map(|(_, _, message)| message)
    }

    fn api(&self) -> Option<(u16, &str, &str)> {
        match self {
            Self::Unavailable { status, code, message }
            | Self::Unauthorized { status, code, message }
            | Self::Forbidden { status, code, message }
            | Self::NotFound { status, code, message }
            | Self::Invalid { status, code, message }
            | Self::Rejected { status, code, message } => Some((*status, code, message)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_variants_and_keep_code_and_message() {
        type Check = fn(&PlankaError) -> bool;
        let cases: &[(&str, u16, &str, Check)] = &[
            ("unauthorized", 401, r#"{"code":"E_UNAUTHORIZED","message":"Invalid credentials"}"#, |e| {
                matches!(e, PlankaError::Unauthorized { .. })
            }),
            ("forbidden", 403, r#"{"code":"E_FORBIDDEN","message":"Not enough rights"}"#, |e| {
                matches!(e, PlankaError::Forbidden { .. })
            }),
            ("not found", 404, r#"{"code":"E_NOT_FOUND","message":"Card not found"}"#, |e| {
                matches!(e, PlankaError::NotFound { .. })
            }),
            ("missing params", 400, r#"{"code":"E_MISSING_OR_INVALID_PARAMS","message":"x","problems":[]}"#, |e| {
                matches!(e, PlankaError::Invalid { .. })
            }),
            ("unprocessable", 422, r#"{"code":"E_UNPROCESSABLE_ENTITY","message":"Position must be present"}"#, |e| {
                matches!(e, PlankaError::Invalid { .. })
            }),
            ("conflict", 409, r#"{"code":"E_CONFLICT","message":"User already card member"}"#, |e| {
                matches!(e, PlankaError::Rejected { .. })
            }),
            ("proxy down", 502, "<html>Bad Gateway</html>", |e| e.is_transient()),
        ];
        for (name, status, body, check) in cases {
            let e = PlankaError::from_response(*status, body.as_bytes());
            assert!(check(&e), "{name}: {e:?}");
            assert_eq!(e.status(), Some(*status), "{name}");
            assert!(e.to_string().starts_with("Planka"), "{name}: {e}");
            if body.starts_with('{') {
                let v: serde_json::Value = serde_json::from_str(body).unwrap();
                assert_eq!(e.code(), v["code"].as_str(), "{name}");
                assert_eq!(e.message(), v["message"].as_str(), "{name}");
                assert!(e.to_string().contains(v["message"].as_str().unwrap()), "{name}: {e}");
            }
        }
    }

    #[test]
    fn only_outages_are_transient() {
        assert!(PlankaError::Timeout(Duration::from_secs(1)).is_transient());
        assert!(PlankaError::Unreachable { url: "u".into(), reason: "r".into() }.is_transient());
        assert!(PlankaError::from_response(503, b"").is_transient());
        assert!(!PlankaError::from_response(404, b"{}").is_transient());
        assert!(!PlankaError::Unsupported("v1".into()).is_transient());
        assert!(!PlankaError::NotConfigured.is_transient());
    }

    #[test]
    fn public_words_carry_no_address_and_no_planka_text() {
        let said = "E_INTERNAL at http://10.1.2.3:1337/api".to_owned();
        let errors = [
            PlankaError::Unreachable { url: "http://10.1.2.3:1337".into(), reason: said.clone() },
            PlankaError::Unavailable { status: 503, code: "E".into(), message: said.clone() },
            PlankaError::Invalid { status: 400, code: "E".into(), message: said.clone() },
            PlankaError::Response(said.clone()),
        ];
        for e in errors {
            let words = e.public();
            assert!(!words.contains("10.1.2.3") && !words.contains("E_INTERNAL"), "{words}");
        }
    }
}
