//! `WeChatAuthLayer` and `WeChatAuth<S>`.

pub mod dispatch;
pub mod response;
