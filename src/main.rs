//! The `wechat-oauth-proxy` sidecar binary.
fn main() {}
