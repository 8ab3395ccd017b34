//! The acting half: one reconcile ([`reconcile`]) as named steps, each of
//! which reads what it needs, takes its decision from [`super::decide`],
//! does its IO, and returns an outcome value. [`key_and_token`] composes
//! the key, the rotation's step and the token step, and is with
//! [`reconcile`] the only place that records outcomes in the draft and the
//! client's memory.

pub mod contain;
pub mod discover;
pub mod exchange;
pub mod key_and_token;
pub mod keys;
pub mod reconcile;
pub mod rotate;
pub mod token;
