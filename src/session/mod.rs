//! Sessions: the store trait, the cookie codec, return-path validation and the backends.
//!
//! Knows nothing about WeChat.
