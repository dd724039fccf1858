//! The loader library: starts a fresh agent VM under QEMU and passes bytes.
//!
//! The loader is untrusted by design: it never interprets what it forwards
//! beyond framing, and nothing the agent attests depends on it.

pub mod store;
