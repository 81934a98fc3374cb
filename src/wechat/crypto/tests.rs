//! Published WXBizMsgCrypt vectors (protocol §4.8) and negative cases.

use super::*;
