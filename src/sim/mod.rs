//! The simulated WeChat (loopback only), its ticket pusher and the demo upstream.
