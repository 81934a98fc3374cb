//! See the issue; filled in by the wechat work.
