//! What the controller holds between reconciles and passes between its
//! parts: the per-client memory, the planned looks, the settings, and when
//! a reconcile wants to look again. No IO.

pub(crate) mod memory;
pub mod progress;
pub(crate) mod requeue;
pub(crate) mod settings;
pub(crate) mod target;
