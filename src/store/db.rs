//! Durable relations: room members and contacts in a redb database at
//! `<data_dir>/relations.redb`.
//!
//! Owns the on-disk format. Every change ([`Store::apply`]) is one write
//! transaction committed with [`Durability::Immediate`] before the call
//! returns, so a change the admin API acknowledged survives a crash, and
//! a batch is all or nothing. It keeps no model: [`Store::load`] hands the
//! contents to the shards at start-up, and the admin API's reads
//! ([`Store::members`], [`Store::contacts`]) are read transactions.
//!
//! redb's page cache is capped at [`limits::STORE_CACHE_BYTES`]; it is
//! the store's memory, not the relations' (which live on the shards).

use std::fs::DirBuilder;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use crate::core::pairset::PairSet;
use crate::ids::{ChatId, UserId};
use crate::limits;
use crate::store::change::{NetChange, Op, Plan};

/// `(chatid, userid) -> ()`: one row per membership. The key order lets a
/// room's members be read or replaced as one range.
const MEMBERS: TableDefinition<(u64, u64), ()> = TableDefinition::new("room_members");
/// `(a, b) -> ()`: one row per direction of each contact, so that a user's
/// contacts are one range too.
const CONTACTS: TableDefinition<(u64, u64), ()> = TableDefinition::new("contacts");

/// The database file name under the data directory.
pub const DB_FILE: &str = "relations.redb";

/// Why the store could not be opened, read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The data directory could not be created.
    #[error("cannot create data directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The database file exists but is not a readable redb database (or
    /// another process holds it). Refusing is the point: starting with an
    /// empty relation set would silently drop every room and contact.
    #[error("cannot open relations database {path}: {source}")]
    Open {
        path: PathBuf,
        source: redb::DatabaseError,
    },
    /// A transaction failed (I/O error, corruption found while reading).
    #[error("relations database error: {0}")]
    Db(#[from] redb::Error),
}

impl From<redb::TransactionError> for StoreError {
    fn from(e: redb::TransactionError) -> Self {
        StoreError::Db(e.into())
    }
}
impl From<redb::TableError> for StoreError {
    fn from(e: redb::TableError) -> Self {
        StoreError::Db(e.into())
    }
}
impl From<redb::StorageError> for StoreError {
    fn from(e: redb::StorageError) -> Self {
        StoreError::Db(e.into())
    }
}
impl From<redb::CommitError> for StoreError {
    fn from(e: redb::CommitError) -> Self {
        StoreError::Db(e.into())
    }
}
impl From<redb::SetDurabilityError> for StoreError {
    fn from(e: redb::SetDurabilityError) -> Self {
        StoreError::Db(e.into())
    }
}

/// The relations database. One writer at a time (the admin API serializes
/// its writes); redb also serializes write transactions itself.
pub struct Store {
    db: Database,
}

impl Store {
    /// Opens `<data_dir>/relations.redb`, creating the directory (mode
    /// 0700: it also holds the secrets) and an empty database when missing.
    pub fn open(data_dir: &Path) -> Result<Store, StoreError> {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(data_dir)
            .map_err(|source| StoreError::CreateDir {
                path: data_dir.to_owned(),
                source,
            })?;
        let path = data_dir.join(DB_FILE);
        let db = Database::builder()
            .set_cache_size(limits::STORE_CACHE_BYTES)
            .create(&path)
            .map_err(|source| StoreError::Open {
                path: path.clone(),
                source,
            })?;
        let store = Store { db };
        // Create both tables up front so that readers never meet a missing
        // table, and so that a file that opens but whose tables cannot be
        // read fails here rather than at the first admin call.
        store.write(|_, _| Ok(()))?;
        Ok(store)
    }

    /// A store in memory: a cluster node's copy of the relations, rebuilt
    /// from JetStream at every start (docs/cluster.md), so nothing of it
    /// is written under the data directory.
    pub fn in_memory() -> Result<Store, StoreError> {
        let db = Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(|source| StoreError::Open {
                path: PathBuf::from("<memory>"),
                source,
            })?;
        let store = Store { db };
        store.write(|_, _| Ok(()))?;
        Ok(store)
    }

    /// A store on a custom redb backend, for tests that need writes to fail.
    #[cfg(test)]
    pub(crate) fn with_backend(backend: impl redb::StorageBackend) -> Result<Store, StoreError> {
        let db = Database::builder()
            .create_with_backend(backend)
            .map_err(|source| StoreError::Open {
                path: PathBuf::from("<test backend>"),
                source,
            })?;
        let store = Store { db };
        store.write(|_, _| Ok(()))?;
        Ok(store)
    }

    /// Reads every relation, split the way the shards own them: for shard
    /// `i`, `memberships[i]` holds `(user, chat)` for the rooms with
    /// `room_home(chat) == i`, and `contacts[i]` holds `(user, contact)`
    /// for the users with `user_home(user) == i`. One pass over each
    /// table; no pair of users is ever counted.
    pub fn load(
        &self,
        shards: usize,
        room_home: impl Fn(ChatId) -> usize,
        user_home: impl Fn(UserId) -> usize,
    ) -> Result<Loaded, StoreError> {
        let txn = self.db.begin_read()?;
        // Memberships are stored by room and indexed by user: count each
        // shard's first, so each is read into a vector of exactly its size
        // and sorted in place (no vector grows, and one is freed as soon
        // as its set is built).
        let table = txn.open_table(MEMBERS)?;
        let mut counts = vec![0usize; shards];
        for row in table.iter()? {
            counts[room_home(row?.0.value().0)] += 1;
        }
        let mut members: Vec<Vec<(u64, u64)>> =
            counts.iter().map(|&n| Vec::with_capacity(n)).collect();
        for row in table.iter()? {
            let (key, _) = row?;
            let (chat, user) = key.value();
            members[room_home(chat)].push((user, chat));
        }
        let member_count = counts.iter().sum::<usize>() as u64;
        let memberships = members.into_iter().map(PairSet::from_unsorted).collect();
        // Contacts are stored by user, both ways: each shard's part comes
        // in order and goes straight into its set.
        let mut contacts: Vec<PairSet> = (0..shards).map(|_| PairSet::new()).collect();
        let mut contact_rows = 0;
        for row in txn.open_table(CONTACTS)?.iter()? {
            let (key, _) = row?;
            let (a, b) = key.value();
            // A row of a user with itself (never written by this server)
            // is skipped: nobody is its own contact.
            if a != b {
                contacts[user_home(a)].push_sorted((a, b));
                contact_rows += 1;
            }
        }
        Ok(Loaded {
            memberships,
            contacts,
            members: member_count,
            contact_rows,
        })
    }

    /// The members of `chat`, ascending.
    pub fn members(&self, chat: ChatId) -> Result<Vec<UserId>, StoreError> {
        self.read_range(MEMBERS, chat)
    }

    /// The contacts of `user`, ascending.
    pub fn contacts(&self, user: UserId) -> Result<Vec<UserId>, StoreError> {
        self.read_range(CONTACTS, user)
    }

    /// The second halves of the keys `(first, *)` of `table`.
    fn read_range(
        &self,
        table: TableDefinition<(u64, u64), ()>,
        first: u64,
    ) -> Result<Vec<u64>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(table)?;
        let mut out = Vec::new();
        for row in table.range((first, 0)..=(first, u64::MAX))? {
            out.push(row?.0.value().1);
        }
        Ok(out)
    }

    /// Runs `ops` in order as one durable write transaction and returns
    /// the net difference it made (the input is validated: non-zero ids,
    /// nobody its own contact). Only the keys the operations name and the
    /// rooms and users they reset are read and written, in key order.
    pub fn apply(&self, ops: &[Op]) -> Result<NetChange, StoreError> {
        let plan = Plan::new(ops);
        let mut net = NetChange::default();
        self.write(|members, contacts| {
            for &chat in &plan.reset_rooms {
                let old = first_range(members, chat)?;
                for user in old.into_iter().filter(|&u| !plan.names_member(chat, u)) {
                    members.remove((chat, user))?;
                    net.members_removed.push((chat, user));
                }
            }
            for &(chat, user, exists) in &plan.members {
                if exists {
                    if members.insert((chat, user), ())?.is_none() {
                        net.members_added.push((chat, user));
                    }
                } else if members.remove((chat, user))?.is_some() {
                    net.members_removed.push((chat, user));
                }
            }
            for &user in &plan.reset_users {
                let old = first_range(contacts, user)?;
                for other in old {
                    let (lo, hi) = (user.min(other), user.max(other));
                    // Found from both ends when both were reset: the
                    // second finds it gone.
                    if !plan.names_contact(lo, hi) && contacts.remove((lo, hi))?.is_some() {
                        contacts.remove((hi, lo))?;
                        net.contacts_removed.push((lo, hi));
                    }
                }
            }
            for &(lo, hi, exists) in &plan.contacts {
                if exists {
                    if contacts.insert((lo, hi), ())?.is_none() {
                        contacts.insert((hi, lo), ())?;
                        net.contacts_added.push((lo, hi));
                    }
                } else if contacts.remove((lo, hi))?.is_some() {
                    contacts.remove((hi, lo))?;
                    net.contacts_removed.push((lo, hi));
                }
            }
            Ok(())
        })?;
        net.members_removed.sort_unstable();
        net.contacts_removed.sort_unstable();
        Ok(net)
    }

    /// Runs `f` on both tables in one write transaction and commits it
    /// durably. On any error nothing is committed (the transaction aborts
    /// when dropped).
    fn write(
        &self,
        f: impl FnOnce(&mut RelTable<'_>, &mut RelTable<'_>) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        {
            let mut members = txn.open_table(MEMBERS)?;
            let mut contacts = txn.open_table(CONTACTS)?;
            f(&mut members, &mut contacts)?;
        }
        txn.commit()?;
        Ok(())
    }
}

/// A writable relation table.
type RelTable<'txn> = redb::Table<'txn, (u64, u64), ()>;

/// The second halves of the keys `(first, *)` of a writable table.
fn first_range(table: &RelTable<'_>, first: u64) -> Result<Vec<u64>, StoreError> {
    let mut out = Vec::new();
    for row in table.range((first, 0)..=(first, u64::MAX))? {
        out.push(row?.0.value().1);
    }
    Ok(out)
}

/// The relations read at start-up, split by owning shard (see
/// [`Store::load`]).
#[derive(Debug)]
pub struct Loaded {
    /// Per shard: `(user, chat)` of the rooms it is home to.
    pub memberships: Vec<PairSet>,
    /// Per shard: `(user, contact)` of the users it is home to.
    pub contacts: Vec<PairSet>,
    /// Memberships in all.
    pub members: u64,
    /// Contact rows in all (two per contact pair).
    pub contact_rows: u64,
}

/// An in-memory redb backend whose writes fail while a flag is set, to test
/// what callers do when a durable commit fails.
#[cfg(test)]
#[derive(Debug, Default)]
pub(crate) struct FlakyBackend {
    inner: redb::backends::InMemoryBackend,
    /// Set to make every write and sync fail.
    pub fail: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

#[cfg(test)]
impl FlakyBackend {
    fn check(&self) -> Result<(), std::io::Error> {
        if self.fail.load(std::sync::atomic::Ordering::SeqCst) {
            Err(std::io::Error::other("injected write failure"))
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
impl redb::StorageBackend for FlakyBackend {
    fn len(&self) -> Result<u64, std::io::Error> {
        self.inner.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        self.inner.read(offset, out)
    }
    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        self.check()?;
        self.inner.set_len(len)
    }
    fn sync_data(&self) -> Result<(), std::io::Error> {
        self.check()?;
        self.inner.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        self.check()?;
        self.inner.write(offset, data)
    }
}

#[cfg(test)]
#[path = "db_tests.rs"]
mod tests;
