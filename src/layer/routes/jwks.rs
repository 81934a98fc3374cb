//! `jwks.json`: the public keys of the identity JWT (current and previous), so upstreams verify
//! without a shared secret and keys can rotate. Empty (`{"keys":[]}`) with HS256.

use http::StatusCode;

use crate::layer::{
    body::{OwnResponse, json_bytes},
    pipeline::Shared,
};

/// `GET jwks.json`.
pub(crate) fn jwks(shared: &Shared) -> OwnResponse {
    json_bytes(StatusCode::OK, shared.jwt.jwks_json())
}
