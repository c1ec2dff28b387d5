//! The store: files and errors, then batches of operations against a
//! plain model (their net changes and what survives a reopen), with ids
//! at both ends of the range.

use super::*;
use proptest::prelude::*;
use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;

/// A set of id pairs.
type Pairs = BTreeSet<(u64, u64)>;

/// Everything stored, as `(chat, user)` memberships and `(low, high)`
/// contact pairs; checks that each contact is stored both ways.
fn contents(store: &Store) -> (Pairs, Pairs) {
    let loaded = store.load(1, |_| 0, |_| 0).unwrap();
    let members: BTreeSet<(u64, u64)> = loaded.memberships[0].iter().map(|(u, c)| (c, u)).collect();
    let rows: BTreeSet<(u64, u64)> = loaded.contacts[0].iter().collect();
    for &(a, b) in &rows {
        assert!(rows.contains(&(b, a)), "contact {a} -> {b} stored one way");
    }
    let pairs = rows.into_iter().filter(|(a, b)| a < b).collect();
    assert_eq!(loaded.members as usize, members.len());
    (members, pairs)
}

/// The operations run one by one on plain sets.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Model {
    members: BTreeSet<(u64, u64)>,
    contacts: BTreeSet<(u64, u64)>,
}

impl Model {
    fn run(&mut self, op: &Op) {
        let pair = |a: u64, b: u64| (a.min(b), a.max(b));
        match op {
            &Op::PutMember { chat, user } => {
                self.members.insert((chat, user));
            }
            &Op::DeleteMember { chat, user } => {
                self.members.remove(&(chat, user));
            }
            Op::PutRoom { chat, members } => {
                self.members.retain(|&(c, _)| c != *chat);
                self.members.extend(members.iter().map(|&u| (*chat, u)));
            }
            &Op::DeleteRoom { chat } => self.members.retain(|&(c, _)| c != chat),
            &Op::PutContact { a, b } => {
                self.contacts.insert(pair(a, b));
            }
            &Op::DeleteContact { a, b } => {
                self.contacts.remove(&pair(a, b));
            }
            Op::PutContacts { user, contacts } => {
                self.contacts.retain(|&(a, b)| a != *user && b != *user);
                self.contacts
                    .extend(contacts.iter().map(|&c| pair(*user, c)));
            }
        }
    }

    /// The net change from `before` to `self`.
    fn diff(&self, before: &Model) -> NetChange {
        NetChange {
            members_added: self.members.difference(&before.members).copied().collect(),
            members_removed: before.members.difference(&self.members).copied().collect(),
            contacts_added: self
                .contacts
                .difference(&before.contacts)
                .copied()
                .collect(),
            contacts_removed: before
                .contacts
                .difference(&self.contacts)
                .copied()
                .collect(),
        }
    }
}

#[test]
fn open_creates_a_private_data_dir_and_an_empty_store() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("a/b");
    let store = Store::open(&dir).unwrap();
    assert_eq!(contents(&store), Default::default());
    let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
    assert!(dir.join(DB_FILE).exists());
}

#[test]
fn relations_survive_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let ops = [
        Op::PutRoom {
            chat: 7,
            members: vec![1, 2, 3, 2],
        },
        Op::PutMember { chat: 8, user: 1 },
        Op::DeleteMember { chat: 7, user: 3 },
        Op::PutRoom {
            chat: 9,
            members: vec![4, 5],
        },
        Op::DeleteRoom { chat: 9 },
        Op::PutContact { a: 1, b: 4 },
        Op::PutContact { a: 2, b: 5 },
        Op::DeleteContact { a: 5, b: 2 },
    ];
    let mut want = Model::default();
    {
        let store = Store::open(tmp.path()).unwrap();
        for op in &ops {
            store.apply(std::slice::from_ref(op)).unwrap();
            want.run(op);
        }
        assert_eq!(
            contents(&store),
            (want.members.clone(), want.contacts.clone())
        );
    }
    let store = Store::open(tmp.path()).unwrap();
    assert_eq!(contents(&store), (want.members, want.contacts));
    assert_eq!(store.members(7).unwrap(), [1, 2]);
    assert_eq!(store.contacts(4).unwrap(), [1]);
    assert_eq!(store.contacts(2).unwrap(), Vec::<u64>::new());
}

#[test]
fn put_room_replaces_only_that_room() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    let put = |chat, members: &[u64]| Op::PutRoom {
        chat,
        members: members.to_vec(),
    };
    store.apply(&[put(7, &[1, 2]), put(8, &[1, 2])]).unwrap();
    let net = store.apply(&[put(7, &[3])]).unwrap();
    assert_eq!(net.members_added, [(7, 3)]);
    assert_eq!(net.members_removed, [(7, 1), (7, 2)]);
    assert_eq!(store.members(7).unwrap(), [3]);
    assert_eq!(store.members(8).unwrap(), [1, 2]);
}

#[test]
fn a_batch_writes_and_reports_only_its_net_effect() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    store
        .apply(&[
            Op::PutMember { chat: 7, user: 1 },
            Op::PutContact { a: 1, b: 2 },
        ])
        .unwrap();
    let net = store
        .apply(&[
            // Added and removed again: nothing.
            Op::PutMember { chat: 7, user: 9 },
            Op::DeleteMember { chat: 7, user: 9 },
            // Already there: nothing.
            Op::PutMember { chat: 7, user: 1 },
            // Removed and put back: nothing.
            Op::DeleteContact { a: 2, b: 1 },
            Op::PutContact { a: 1, b: 2 },
            // Added through two ops: once.
            Op::PutContact { a: 3, b: 1 },
            Op::PutContacts {
                user: 3,
                contacts: vec![1, 1],
            },
        ])
        .unwrap();
    assert_eq!(
        net,
        NetChange {
            contacts_added: vec![(1, 3)],
            ..NetChange::default()
        }
    );
    assert!(store.apply(&[]).unwrap().is_empty());
}

#[test]
fn the_largest_id_is_stored_and_removed_like_any_other() {
    // Issue 15, item 7: a contact with u64::MAX was counted twice by the
    // old start-up load (`range(a + 1..)` wrapped), so deleting it left
    // the pair visible. Here: stored both ways, loaded once, deleted.
    let tmp = tempfile::tempdir().unwrap();
    let max = u64::MAX;
    {
        let store = Store::open(tmp.path()).unwrap();
        store.apply(&[Op::PutContact { a: 5, b: max }]).unwrap();
        store
            .apply(&[Op::PutMember {
                chat: max,
                user: max,
            }])
            .unwrap();
    }
    let store = Store::open(tmp.path()).unwrap();
    let loaded = store.load(1, |_| 0, |_| 0).unwrap();
    assert_eq!(loaded.contact_rows, 2);
    assert_eq!(loaded.contacts[0].seconds(max).collect::<Vec<_>>(), [5]);
    assert_eq!(
        loaded.memberships[0].seconds(max).collect::<Vec<_>>(),
        [max]
    );
    let net = store.apply(&[Op::DeleteContact { a: max, b: 5 }]).unwrap();
    assert_eq!(net.contacts_removed, [(5, max)]);
    drop(store);
    let store = Store::open(tmp.path()).unwrap();
    assert_eq!(contents(&store).1, BTreeSet::new());
    assert_eq!(store.contacts(5).unwrap(), Vec::<u64>::new());
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
fn failed_commit_is_an_error_and_changes_nothing() {
    let backend = FlakyBackend::default();
    let fail = backend.fail.clone();
    let store = Store::with_backend(backend).unwrap();
    store.apply(&[Op::PutMember { chat: 7, user: 1 }]).unwrap();
    fail.store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(store.apply(&[Op::PutMember { chat: 7, user: 2 }]).is_err());
    fail.store(false, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(store.members(7).unwrap(), [1]);
}

#[test]
fn database_path_that_is_a_directory_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmp.path().join(DB_FILE)).unwrap();
    assert!(Store::open(tmp.path()).is_err());
}

/// Ids bunched at both ends of the range (0 is never a real id).
fn id() -> impl Strategy<Value = u64> {
    prop_oneof![1u64..5, (0u64..3).prop_map(|d| u64::MAX - d)]
}

fn op() -> impl Strategy<Value = Op> {
    let list = || prop::collection::vec(id(), 0..5);
    prop_oneof![
        3 => (id(), id()).prop_map(|(chat, user)| Op::PutMember { chat, user }),
        2 => (id(), id()).prop_map(|(chat, user)| Op::DeleteMember { chat, user }),
        1 => (id(), list()).prop_map(|(chat, members)| Op::PutRoom { chat, members }),
        1 => id().prop_map(|chat| Op::DeleteRoom { chat }),
        3 => (id(), id())
            .prop_filter("own contact", |(a, b)| a != b)
            .prop_map(|(a, b)| Op::PutContact { a, b }),
        2 => (id(), id())
            .prop_filter("own contact", |(a, b)| a != b)
            .prop_map(|(a, b)| Op::DeleteContact { a, b }),
        1 => (id(), list()).prop_map(|(user, mut contacts)| {
            contacts.retain(|&c| c != user);
            Op::PutContacts { user, contacts }
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Each batch's net change is the model's difference, the store holds
    /// the model, and so does a reopened store.
    #[test]
    fn batches_match_the_model_and_survive_reopen(
        batches in prop::collection::vec(prop::collection::vec(op(), 0..8), 1..8),
    ) {
        let tmp = tempfile::tempdir().unwrap();
        let mut model = Model::default();
        {
            let store = Store::open(tmp.path()).unwrap();
            for batch in &batches {
                let before = model.clone();
                for op in batch {
                    model.run(op);
                }
                let net = store.apply(batch).unwrap();
                prop_assert_eq!(net, model.diff(&before));
                prop_assert_eq!(contents(&store), (model.members.clone(), model.contacts.clone()));
            }
        }
        let store = Store::open(tmp.path()).unwrap();
        prop_assert_eq!(contents(&store), (model.members, model.contacts));
    }
}
