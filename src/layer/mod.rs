//! `WeChatAuthLayer` and `WeChatAuth<S>`.
