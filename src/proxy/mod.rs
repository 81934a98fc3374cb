//! Upstream forwarding for the sidecar.
