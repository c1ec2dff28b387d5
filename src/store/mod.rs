//! Durable relations (room members, contacts) and the relation model.
//!
//! - [`db`]: the redb database under the data directory; every write is
//!   committed durably before it returns.
//! - [`relations`]: the in-memory model loaded from it, which turns each
//!   change into the [`effect::RelationEffect`]s the shards apply.
//! - [`effect`]: what a relation change means for the live shards.
//!
//! The admin API writes the store first, then the model, then hands the
//! effects to the shards, so a change is never live before it is durable.

pub mod db;
pub mod effect;
pub mod relations;

pub use db::{Store, StoreError};
pub use relations::Relations;
