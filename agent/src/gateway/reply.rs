//! What the agent gets when the gateway refuses: a status and a JSON body
//! saying why, which rule, which decision — never a secret.

use hyper::{StatusCode, header};
use serde::Serialize;

use super::http::{Resp, full};

/// A refusal, with what a client shows and what support asks for.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Refusal {
    #[serde(skip)]
    pub status: u16,
    /// A stable code: `denied-by-rule`, `no-route`, `body-too-large`…
    pub reason: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decision_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy_version: Option<String>,
}

impl Refusal {
    pub fn new(status: StatusCode, reason: &str, message: impl Into<String>) -> Self {
        Self {
            status: status.as_u16(),
            reason: reason.to_string(),
            message: message.into(),
            ..Self::default()
        }
    }

    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::FORBIDDEN)
    }

    pub fn into_response(self) -> Resp {
        #[derive(Serialize)]
        struct Wire<'a> {
            error: &'a Refusal,
        }
        let body = serde_json::to_vec(&Wire { error: &self }).unwrap_or_default();
        let mut r = hyper::Response::new(full(body));
        *r.status_mut() = self.status();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/json"),
        );
        // The body was left unread: the connection cannot carry another
        // request, so say so, or a keep-alive client sends its next request
        // into a connection the gateway is closing (HTTP/2 drops the header;
        // its streams are independent).
        if matches!(
            r.status(),
            StatusCode::PAYLOAD_TOO_LARGE | StatusCode::REQUEST_TIMEOUT
        ) {
            r.headers_mut().insert(
                header::CONNECTION,
                header::HeaderValue::from_static("close"),
            );
        }
        r
    }
}
