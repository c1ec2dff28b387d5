//! Durable relations: room members and contacts in a redb database at
//! `<data_dir>/relations.redb`.
//!
//! Owns the on-disk format. Every write is one write transaction committed
//! with [`Durability::Immediate`] before the call returns, so a change the
//! admin API acknowledged survives a crash. It computes no effects and keeps
//! no model: [`Store::load`] hands the contents to [`Relations`].

use std::fs::DirBuilder;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use crate::ids::{ChatId, UserId};
use crate::store::relations::Relations;

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
        let db = Database::create(&path).map_err(|source| StoreError::Open {
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

    /// Reads every relation into a fresh model.
    pub fn load(&self) -> Result<Relations, StoreError> {
        let txn = self.db.begin_read()?;
        let mut relations = Relations::new();
        for row in txn.open_table(MEMBERS)?.iter()? {
            let (key, _) = row?;
            let (chat, user) = key.value();
            relations.load_member(chat, user);
        }
        for row in txn.open_table(CONTACTS)?.iter()? {
            let (key, _) = row?;
            let (a, b) = key.value();
            relations.load_contact(a, b);
        }
        Ok(relations)
    }

    /// Stores that `user` is a member of `chat`.
    pub fn add_member(&self, chat: ChatId, user: UserId) -> Result<(), StoreError> {
        self.write(|members, _| {
            members.insert((chat, user), ())?;
            Ok(())
        })
    }

    /// Stores that `user` is not a member of `chat`.
    pub fn remove_member(&self, chat: ChatId, user: UserId) -> Result<(), StoreError> {
        self.write(|members, _| {
            members.remove((chat, user))?;
            Ok(())
        })
    }

    /// Replaces the member list of `chat` (duplicates are harmless).
    pub fn set_members(&self, chat: ChatId, new: &[UserId]) -> Result<(), StoreError> {
        self.write(|members, _| {
            members.retain_in((chat, 0)..=(chat, u64::MAX), |_, _| false)?;
            for &user in new {
                members.insert((chat, user), ())?;
            }
            Ok(())
        })
    }

    /// Removes every member of `chat`.
    pub fn delete_room(&self, chat: ChatId) -> Result<(), StoreError> {
        self.set_members(chat, &[])
    }

    /// Stores that `a` and `b` are contacts of each other.
    pub fn add_contact(&self, a: UserId, b: UserId) -> Result<(), StoreError> {
        self.write(|_, contacts| {
            contacts.insert((a, b), ())?;
            contacts.insert((b, a), ())?;
            Ok(())
        })
    }

    /// Stores that `a` and `b` are not contacts.
    pub fn remove_contact(&self, a: UserId, b: UserId) -> Result<(), StoreError> {
        self.write(|_, contacts| {
            contacts.remove((a, b))?;
            contacts.remove((b, a))?;
            Ok(())
        })
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
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn open_creates_a_private_data_dir_and_an_empty_store() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b");
        let store = Store::open(&dir).unwrap();
        assert_eq!(store.load().unwrap(), Relations::new());
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        assert!(dir.join(DB_FILE).exists());
    }

    #[test]
    fn relations_survive_reopen() {
        let tmp = tempfile::tempdir().unwrap();
        let mut want = Relations::new();
        {
            let store = Store::open(tmp.path()).unwrap();
            store.set_members(7, &[1, 2, 3, 2]).unwrap();
            want.set_members(7, &[1, 2, 3, 2]);
            store.add_member(8, 1).unwrap();
            want.add_member(8, 1);
            store.remove_member(7, 3).unwrap();
            want.remove_member(7, 3);
            store.set_members(9, &[4, 5]).unwrap();
            want.set_members(9, &[4, 5]);
            store.delete_room(9).unwrap();
            want.delete_room(9);
            store.add_contact(1, 4).unwrap();
            want.add_contact(1, 4);
            store.add_contact(2, 5).unwrap();
            want.add_contact(2, 5);
            store.remove_contact(5, 2).unwrap();
            want.remove_contact(5, 2);
            assert_eq!(store.load().unwrap(), want);
        }
        let store = Store::open(tmp.path()).unwrap();
        let got = store.load().unwrap();
        assert_eq!(got, want);
        assert_eq!(got.members(7).unwrap().len(), 2);
        assert!(got.contacts_of(4).unwrap().contains(&1));
        assert!(got.contacts_of(2).is_none());
    }

    #[test]
    fn set_members_replaces_only_that_room() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        store.set_members(7, &[1, 2]).unwrap();
        store.set_members(8, &[1, 2]).unwrap();
        store.set_members(7, &[3]).unwrap();
        let r = store.load().unwrap();
        assert_eq!(
            r.members(7).unwrap().iter().copied().collect::<Vec<_>>(),
            [3]
        );
        assert_eq!(r.members(8).unwrap().len(), 2);
    }

    #[test]
    fn corrupt_database_file_is_an_error_not_an_empty_store() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join(DB_FILE), vec![0x5a; 64 * 1024]).unwrap();
        let err = Store::open(tmp.path())
            .err()
            .expect("garbage must not open");
        assert!(matches!(err, StoreError::Open { .. }), "{err}");
        assert!(err.to_string().contains(DB_FILE), "{err}");
    }

    #[test]
    fn failed_commit_is_an_error() {
        let backend = FlakyBackend::default();
        let fail = backend.fail.clone();
        let store = Store::with_backend(backend).unwrap();
        store.add_member(7, 1).unwrap();
        fail.store(true, std::sync::atomic::Ordering::SeqCst);
        assert!(store.add_member(7, 2).is_err());
    }

    #[test]
    fn database_path_that_is_a_directory_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join(DB_FILE)).unwrap();
        assert!(Store::open(tmp.path()).is_err());
    }
}
