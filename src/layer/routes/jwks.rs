//! `jwks.json`: the public keys of the identity JWT (current and previous), so upstreams verify
//! without a auth secret and keys can rotate. Empty (`{"keys":[]}`) with HS256.

use http::StatusCode;

use crate::layer::{body::OwnResponse, respond::json_bytes, state::AuthState};

/// `GET jwks.json`.
pub(super) fn jwks(auth: &AuthState) -> OwnResponse {
    json_bytes(StatusCode::OK, auth.jwt.jwks_json())
}
