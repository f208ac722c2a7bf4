//! Who is calling (the principal) and the per-route access decision.

use super::AppState;
use super::error::WebError;
use crate::db::sessions::{Session, Stage};
use crate::db::users::{Role, Status, User};
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::Response;

/// The access decision attached to a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No sign-in needed (the short, tested allowlist).
    Public,
    /// A session that has passed the password and waits for its second factor.
    MfaPending,
    /// A session enrolling a second factor (required before administrators get more),
    /// or a full session adding one.
    Enrolling,
    /// Any session at all (used only by sign-out).
    AnySession,
    /// A signed-in account of any role.
    Signed,
    /// Fleet staff: administrators and operators, with a full session.
    Staff,
    /// Administrators only.
    Admin,
}

/// How the caller proved who they are.
#[derive(Debug, Clone)]
pub enum Credential {
    Session(Session),
    ApiToken,
}

/// The authenticated caller, resolved once per request by middleware.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user: User,
    pub credential: Credential,
}

impl Principal {
    pub fn session(&self) -> Option<&Session> {
        match &self.credential {
            Credential::Session(s) => Some(s),
            Credential::ApiToken => None,
        }
    }
    fn stage(&self) -> Stage {
        self.session().map_or(Stage::Full, |s| s.stage)
    }
    pub fn is_full(&self) -> bool {
        self.stage() == Stage::Full && self.user.status == Status::Active
    }
    pub fn is_admin(&self) -> bool {
        self.is_full() && self.user.role == Role::Admin
    }
    /// An administrator or operator: may see and act on the whole fleet.
    pub fn is_staff(&self) -> bool {
        self.is_full() && matches!(self.user.role, Role::Admin | Role::Operator)
    }
    /// `Forbidden` unless staff: for handlers on routes that also admit owners.
    pub fn require_staff(&self) -> Result<(), super::error::WebError> {
        if self.is_staff() {
            Ok(())
        } else {
            Err(super::error::WebError::Forbidden)
        }
    }
}

/// Route middleware: refuse the request unless the principal satisfies the route's access.
pub async fn require(
    State((state, access)): State<(AppState, Access)>,
    request: Request,
    next: Next,
) -> Result<Response, WebError> {
    let principal = request.extensions().get::<Principal>();
    let allowed = match (access, principal) {
        (Access::Public, _) => true,
        (_, None) => return Err(WebError::Unauthorized),
        (Access::AnySession, Some(p)) => p.session().is_some(),
        (Access::MfaPending, Some(p)) => p.stage() == Stage::Mfa,
        (Access::Enrolling, Some(p)) => {
            p.session().is_some() && (p.stage() == Stage::Enrol || p.is_full())
        }
        (Access::Signed, Some(p)) => p.is_full(),
        (Access::Staff, Some(p)) => p.is_staff(),
        (Access::Admin, Some(p)) => p.is_admin(),
    };
    if !allowed {
        return Err(match principal {
            Some(p) if p.is_full() => WebError::Forbidden,
            _ => WebError::Unauthorized,
        });
    }
    // An owner who has not accepted a substantive policy change sees the policy before
    // any other console page (PRIV-1). API tokens are not stopped: a script cannot read.
    // Nor are the owner's own data pages: not accepting a new policy must not stop
    // anyone from taking their data and deleting their account (DATA-3, DATA-4).
    if let Some(p) = principal
        && p.session().is_some()
        && matches!(access, Access::Signed | Access::Staff | Access::Admin)
        && !request.uri().path().starts_with("/privacy")
        && !request.uri().path().starts_with("/api/")
        && !matches!(
            request.uri().path(),
            "/account/privacy" | "/account/privacy/reauth" | "/account/export" | "/account/delete"
        )
        && state.db.must_accept_policy(&p.user).await?.is_some()
    {
        return Ok(super::console::redirect("/privacy/accept"));
    }
    Ok(next.run(request).await)
}

/// Handlers that need a caller take `Principal`; it is absent (401) unless middleware
/// resolved one, so a handler cannot be reached anonymously by mistake.
impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = WebError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Principal>()
            .cloned()
            .ok_or(WebError::Unauthorized)
    }
}

/// A principal with a full session and the administrator role.
pub struct AdminPrincipal(pub Principal);

impl<S: Send + Sync> FromRequestParts<S> for AdminPrincipal {
    type Rejection = WebError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let p = Principal::from_request_parts(parts, state).await?;
        if p.is_admin() {
            Ok(Self(p))
        } else {
            Err(WebError::Forbidden)
        }
    }
}
