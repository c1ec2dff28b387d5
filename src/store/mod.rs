//! Durable relations (room members, contacts) and what a change to them
//! is.
//!
//! - [`db`]: the redb database under the data directory; every change is
//!   one write transaction committed durably before it returns.
//! - [`change`]: the operations of the admin API and the net difference a
//!   list of them makes, which is what the store writes and the shards
//!   apply.
//!
//! The admin API writes the store first, then hands the net change to the
//! shards, so a change is never live before it is durable. The relations
//! themselves live on the shards that own them (`core::relations`);
//! nothing here keeps them in memory.

pub mod change;
pub mod db;

pub use change::{NetChange, Op};
pub use db::{Loaded, Store, StoreError};
