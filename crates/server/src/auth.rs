//! Bearer-token authentication against the store.

use crate::{ApiError, AppState};
use axum::http::HeaderMap;
use store::TokenInfo;

pub fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<TokenInfo, ApiError> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(ApiError::invalid_token)?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(ApiError::invalid_token)?;
    match state.store.verify_token(token) {
        Ok(Some(info)) => Ok(info),
        Ok(None) => Err(ApiError::invalid_token()),
        Err(e) => Err(ApiError::internal(format!("checking the token: {e}"))),
    }
}

/// Checks that sandbox `id` belongs to the token. A sandbox of another
/// token answers exactly like one that does not exist.
pub fn authorize_sandbox(state: &AppState, token: &TokenInfo, id: &str) -> Result<(), ApiError> {
    match state.store.get_sandbox(id) {
        Ok(Some(rec)) if rec.token_id.as_deref() == Some(token.id.as_str()) => Ok(()),
        Ok(_) => Err(ApiError::not_found(id)),
        Err(e) => Err(ApiError::internal(format!("looking up the sandbox: {e}"))),
    }
}
