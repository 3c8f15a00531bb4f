//! Authentication: static bearer tokens, OAuth M2M (`/oidc/v1/token`) and an Azure-AD-style
//! token endpoint; identities and grants.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Form;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use sha2::{Digest, Sha256};

use crate::engine::Grants;
use crate::error::ApiError;
use crate::state::Shared;

/// The identity recorded for a static token: `pat:` and the first 12 hex digits of its SHA-256.
/// Tests compare [`crate::StatementRecord::identity`] with this; the token itself is never stored
/// in records.
pub fn token_identity(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    let hex: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
    format!("pat:{hex}")
}

/// A token issued by one of the OAuth endpoints.
#[derive(Debug, Clone)]
pub(crate) struct IssuedToken {
    pub identity: String,
    pub client_id: String,
    pub expires: Instant,
}

/// Who is calling, and what they may read.
#[derive(Debug, Clone)]
pub(crate) struct Identity {
    pub label: String,
    pub grants: Option<Grants>,
    /// The identity may not use the warehouse ([`crate::EmulatorBuilder::deny_warehouse`]).
    pub warehouse_denied: bool,
}

fn eq_secret(a: &str, b: &str) -> bool {
    // Compare digests so the comparison time does not depend on where the strings differ.
    Sha256::digest(a.as_bytes()) == Sha256::digest(b.as_bytes())
}

/// Authenticates an `/api/` request from its `Authorization` header.
pub(crate) fn authenticate(shared: &Shared, headers: &HeaderMap) -> Result<Identity, ApiError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(ApiError::unauthenticated());
    };
    let value = value.to_str().map_err(|_| ApiError::unauthenticated())?;
    let Some((scheme, token)) = value.split_once(' ') else {
        return Err(ApiError::unauthenticated());
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(ApiError::unauthenticated());
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(ApiError::unauthenticated());
    }
    let issued = shared.issued_tokens.lock().get(token).cloned();
    if let Some(issued) = issued {
        if issued.expires <= Instant::now() {
            return Err(ApiError::invalid_token());
        }
        return Ok(Identity {
            label: issued.identity,
            grants: shared.grants.get(&issued.client_id).cloned(),
            warehouse_denied: is_denied(shared, &issued.client_id),
        });
    }
    let configured = &shared.config.tokens;
    if !configured.is_empty() && !configured.iter().any(|t| eq_secret(&t.0, token)) {
        return Err(ApiError::invalid_token());
    }
    Ok(Identity {
        label: token_identity(token),
        grants: shared.grants.get(token).cloned(),
        warehouse_denied: is_denied(shared, token),
    })
}

/// Whether `token_or_client_id` is denied the warehouse.
fn is_denied(shared: &Shared, token_or_client_id: &str) -> bool {
    shared
        .config
        .warehouse_denied
        .iter()
        .any(|denied| eq_secret(&denied.0, token_or_client_id))
}

/// Checks client credentials against the configured OAuth clients.
fn check_client(shared: &Shared, client_id: &str, secret: &str) -> bool {
    shared
        .config
        .oauth_clients
        .get(client_id)
        .is_some_and(|s| eq_secret(&s.0, secret))
}

fn issue(shared: &Shared, identity: String, client_id: &str) -> (String, u64) {
    let mut bytes = [0u8; 24];
    rand::fill(&mut bytes);
    let token = format!(
        "emu-{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    );
    let lifetime = shared.config.token_lifetime;
    let now = Instant::now();
    // A huge lifetime means "never expires": saturate instead of overflowing (a panic).
    let expires = now
        .checked_add(lifetime)
        .or_else(|| now.checked_add(Duration::from_secs(100 * 365 * 24 * 3600)))
        .unwrap_or(now);
    let mut tokens = shared.issued_tokens.lock();
    if tokens.len() > 10_000 {
        tokens.retain(|_, t| t.expires > now);
    }
    tokens.insert(
        token.clone(),
        IssuedToken {
            identity,
            client_id: client_id.to_owned(),
            expires,
        },
    );
    (token, lifetime.as_secs())
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        axum::Json(serde_json::json!({ "error": error, "error_description": description })),
    )
        .into_response()
}

/// The base URL a client used to reach us (from `Host`), or the listen address.
pub(crate) fn base_url(shared: &Shared, headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| !h.is_empty() && !h.contains(['/', ' ', '?', '#']))
        .map(str::to_owned)
        .unwrap_or_else(|| shared.local_addr.to_string());
    format!("{}://{host}", shared.scheme)
}

/// `GET /oidc/.well-known/oauth-authorization-server`.
pub(crate) async fn oidc_discovery(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
) -> Response {
    let base = base_url(&shared, &headers);
    axum::Json(serde_json::json!({
        "authorization_endpoint": format!("{base}/oidc/v1/authorize"),
        "token_endpoint": format!("{base}/oidc/v1/token"),
        "issuer": format!("{base}/oidc"),
        "jwks_uri": format!("{base}/oidc/jwks.json"),
        "scopes_supported": ["all-apis", "email", "offline_access", "openid", "profile", "sql"],
        "response_types_supported": ["code", "id_token"],
        "response_modes_supported": ["query", "fragment", "form_post"],
        "grant_types_supported": ["client_credentials", "authorization_code", "refresh_token"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "request_uri_parameter_supported": false,
    }))
    .into_response()
}

/// `GET /.well-known/databricks-config`: host metadata the databricks-sdk asks for.
pub(crate) async fn databricks_config(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
) -> Response {
    let base = base_url(&shared, &headers);
    axum::Json(serde_json::json!({ "oidc_endpoint": format!("{base}/oidc") })).into_response()
}

/// `POST /oidc/v1/token`: client credentials via HTTP Basic or form fields.
pub(crate) async fn oidc_token(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    form: Result<Form<HashMap<String, String>>, axum::extract::rejection::FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "the body must be application/x-www-form-urlencoded",
        );
    };
    if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "only grant_type=client_credentials is supported",
        );
    }
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Basic ")
                .or_else(|| v.strip_prefix("basic "))
        })
        .and_then(|b| {
            base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .ok()
        })
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.split_once(':').map(|(a, b)| (a.to_owned(), b.to_owned())));
    let credentials = basic.or_else(|| {
        Some((
            form.get("client_id")?.clone(),
            form.get("client_secret")?.clone(),
        ))
    });
    let Some((client_id, secret)) = credentials else {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "Client authentication failed",
        );
    };
    if !check_client(&shared, &client_id, &secret) {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "Client authentication failed",
        );
    }
    let scope = form
        .get("scope")
        .cloned()
        .unwrap_or_else(|| "all-apis".to_owned());
    let (token, expires_in) = issue(&shared, format!("oauth:{client_id}"), &client_id);
    axum::Json(serde_json::json!({
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": expires_in,
        "scope": scope,
    }))
    .into_response()
}

/// `POST /{tenant}/oauth2/v2.0/token` and `/{tenant}/oauth2/token` (Azure AD style).
pub(crate) async fn azure_token(
    State(shared): State<Arc<Shared>>,
    Path(tenant): Path<String>,
    form: Result<Form<HashMap<String, String>>, axum::extract::rejection::FormRejection>,
) -> Response {
    let v1 = false;
    azure_token_impl(&shared, &tenant, form, v1)
}

/// The v1 variant (`resource=`, string `expires_in`).
pub(crate) async fn azure_token_v1(
    State(shared): State<Arc<Shared>>,
    Path(tenant): Path<String>,
    form: Result<Form<HashMap<String, String>>, axum::extract::rejection::FormRejection>,
) -> Response {
    azure_token_impl(&shared, &tenant, form, true)
}

fn azure_token_impl(
    shared: &Shared,
    tenant: &str,
    form: Result<Form<HashMap<String, String>>, axum::extract::rejection::FormRejection>,
    v1: bool,
) -> Response {
    if shared.config.azure_tenant.as_deref() != Some(tenant) {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            &format!("AADSTS90002: Tenant '{tenant}' not found."),
        );
    }
    let Ok(Form(form)) = form else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "AADSTS900144: the request body must be a form",
        );
    };
    if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "AADSTS70003: only client_credentials is supported",
        );
    }
    let (Some(client_id), Some(secret)) = (form.get("client_id"), form.get("client_secret")) else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "AADSTS900144: client_id and client_secret are required",
        );
    };
    if !check_client(shared, client_id, secret) {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "AADSTS7000215: Invalid client secret provided.",
        );
    }
    let (token, expires_in) = issue(shared, format!("azure:{client_id}"), client_id);
    if v1 {
        axum::Json(serde_json::json!({
            "token_type": "Bearer",
            "expires_in": expires_in.to_string(),
            "ext_expires_in": expires_in.to_string(),
            "resource": form.get("resource").cloned().unwrap_or_default(),
            "access_token": token,
        }))
        .into_response()
    } else {
        axum::Json(serde_json::json!({
            "token_type": "Bearer",
            "expires_in": expires_in,
            "ext_expires_in": expires_in,
            "access_token": token,
        }))
        .into_response()
    }
}

/// `GET /aad/auth`: redirects to the tenant's authorize endpoint, as Azure workspaces do (clients
/// discover the tenant from `Location`).
pub(crate) async fn aad_auth(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    match &shared.config.azure_tenant {
        Some(tenant) => {
            let base = base_url(&shared, &headers);
            (
                StatusCode::FOUND,
                [(
                    header::LOCATION,
                    format!("{base}/{tenant}/oauth2/authorize"),
                )],
            )
                .into_response()
        }
        None => ApiError::not_found("this workspace is not an Azure workspace").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_is_a_hash_prefix() {
        let id = token_identity("dapi-secret");
        assert!(id.starts_with("pat:"));
        assert_eq!(id.len(), 4 + 12);
        assert!(!id.contains("dapi"));
        assert_ne!(id, token_identity("dapi-other"));
    }
}
