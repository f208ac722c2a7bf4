//! The one place where failures become HTTP responses. Internal details are logged
//! under an incident id and never sent to the client (SURF-2). API paths get JSON;
//! console paths get the same message as a page (see `middleware::security_headers`).

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// A failure to answer a request.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error("Sign-in required.")]
    Unauthorized,
    #[error("You do not have permission to do this.")]
    Forbidden,
    /// Refused, with a message saying why (e.g. a claim code that is not valid).
    #[error("{0}")]
    Denied(String),
    #[error("Not found.")]
    NotFound,
    /// The object is not in a state that allows this (never says whose it is).
    #[error("{0}")]
    Conflict(String),
    /// A message for the user about what they sent (never internal detail).
    #[error("{0}")]
    BadRequest(String),
    #[error("The form expired or was sent from another site. Reload the page and try again.")]
    Csrf,
    #[error("Too many attempts. Wait {0} seconds and try again.")]
    TooManyRequests(u64),
    #[error("The hub is busy. Try again in a moment.")]
    Busy,
    #[error("The request took too long.")]
    Timeout,
    #[error("Something went wrong on the hub.")]
    Internal(#[from] crate::error::Error),
}

/// Marks a response as an error so console paths can render it as a page.
#[derive(Debug, Clone)]
pub struct ErrorMessage(pub String);

impl WebError {
    pub fn status(&self) -> StatusCode {
        match self {
            WebError::Unauthorized => StatusCode::UNAUTHORIZED,
            WebError::Forbidden | WebError::Csrf | WebError::Denied(_) => StatusCode::FORBIDDEN,
            WebError::NotFound => StatusCode::NOT_FOUND,
            WebError::Conflict(_) => StatusCode::CONFLICT,
            WebError::BadRequest(_) => StatusCode::BAD_REQUEST,
            WebError::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            WebError::Busy => StatusCode::SERVICE_UNAVAILABLE,
            WebError::Timeout => StatusCode::REQUEST_TIMEOUT,
            WebError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<sqlx::Error> for WebError {
    fn from(e: sqlx::Error) -> Self {
        WebError::Internal(e.into())
    }
}

impl From<crate::auth::AuthError> for WebError {
    fn from(e: crate::auth::AuthError) -> Self {
        match e {
            crate::auth::AuthError::Busy => WebError::Busy,
            crate::auth::AuthError::Internal(e) => WebError::Internal(e),
        }
    }
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        let mut message = self.to_string();
        if let WebError::Internal(e) = &self {
            let incident =
                data_encoding::HEXLOWER.encode(&palisade_crypto::token::random_bytes::<6>());
            tracing::error!(incident, "request failed: {e}");
            message = format!("Something went wrong on the hub (incident {incident}).");
        }
        let mut response =
            (self.status(), Json(serde_json::json!({ "error": message }))).into_response();
        match self {
            WebError::TooManyRequests(secs) => {
                if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                    response.headers_mut().insert(header::RETRY_AFTER, v);
                }
            }
            WebError::Busy => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
            _ => {}
        }
        response.extensions_mut().insert(ErrorMessage(message));
        response
    }
}

/// Fallback for unknown paths.
pub async fn not_found() -> WebError {
    WebError::NotFound
}
