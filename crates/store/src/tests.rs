//! Round trips through a real file in a temporary directory.

use crate::RedbStore;
use crate::tables::{EXCHANGES, FORMAT_VERSION_KEY, MESSAGES, META, QUEUES};
use bytes::Bytes;
use std::sync::Arc;
use switchyard_engine::exchange::ExchangeKind;
use switchyard_engine::store::{
    BindingRecord, DestinationKind, ExchangeRecord, QueueRecord, Snapshot, Store, StoreOp,
};
use switchyard_model::{FieldTable, FieldValue, Message, Properties};
use tempfile::TempDir;
use tokio::sync::oneshot;

fn message(i: u64) -> Arc<Message> {
    let mut headers = FieldTable::new();
    headers.insert(
        "n".to_owned(),
        FieldValue::I64(i64::try_from(i).unwrap_or(-1)),
    );
    headers.insert("s".to_owned(), FieldValue::string("x"));
    Arc::new(Message {
        exchange: "ex".to_owned(),
        routing_key: format!("key.{i}"),
        properties: Properties {
            delivery_mode: Some(2),
            headers: Some(headers),
            message_id: Some(format!("m{i}")),
            ..Properties::default()
        },
        body: Bytes::from(format!("body {i}")),
    })
}

fn exchange(name: &str) -> ExchangeRecord {
    let mut arguments = FieldTable::new();
    arguments.insert("alternate-exchange".to_owned(), FieldValue::string("ae"));
    ExchangeRecord {
        vhost: "/".to_owned(),
        name: name.to_owned(),
        kind: ExchangeKind::Topic,
        auto_delete: false,
        internal: true,
        arguments,
    }
}

fn queue(id: u64, name: &str) -> QueueRecord {
    QueueRecord {
        id,
        vhost: "/".to_owned(),
        name: name.to_owned(),
        auto_delete: false,
        arguments: FieldTable::new(),
    }
}

fn binding(destination: &str, key: &str) -> BindingRecord {
    BindingRecord {
        vhost: "/".to_owned(),
        source: "ex1".to_owned(),
        destination_kind: DestinationKind::Queue,
        destination: destination.to_owned(),
        routing_key: key.to_owned(),
        arguments: FieldTable::new(),
    }
}

fn put(queue_id: u64, seq: u64) -> StoreOp {
    StoreOp::PutMessage {
        queue_id,
        seq,
        message: message(seq),
    }
}

fn open(dir: &TempDir) -> RedbStore {
    match RedbStore::open(dir.path()) {
        Ok(store) => store,
        Err(e) => panic!("open: {e}"),
    }
}

fn load(store: &RedbStore) -> Snapshot {
    match store.load() {
        Ok(snapshot) => snapshot,
        Err(e) => panic!("load: {e}"),
    }
}

fn ticket(store: &RedbStore, op: StoreOp) -> oneshot::Receiver<()> {
    let (tx, rx) = oneshot::channel();
    store.submit(op, Some(tx));
    rx
}

fn keys(snapshot: &Snapshot) -> Vec<(u64, u64)> {
    snapshot.messages.iter().map(|(q, s, _)| (*q, *s)).collect()
}

#[test]
fn every_op_round_trips_through_reopen() {
    let dir = TempDir::new().unwrap();
    {
        let store = open(&dir);
        store.submit(StoreOp::PutVhost("/".to_owned()), None);
        store.submit(StoreOp::PutVhost("other".to_owned()), None);
        store.submit(StoreOp::PutExchange(exchange("ex1")), None);
        store.submit(StoreOp::PutExchange(exchange("ex2")), None);
        store.submit(
            StoreOp::DeleteExchange {
                vhost: "/".to_owned(),
                name: "ex2".to_owned(),
            },
            None,
        );
        store.submit(StoreOp::PutQueue(queue(1, "q1")), None);
        store.submit(StoreOp::PutQueue(queue(2, "q2")), None);
        store.submit(StoreOp::PutBinding(binding("q1", "a.#")), None);
        store.submit(StoreOp::PutBinding(binding("q2", "b.*")), None);
        store.submit(StoreOp::DeleteBinding(binding("q2", "b.*")), None);
        store.submit(put(2, 7), None);
        store.submit(put(1, 5), None);
        store.submit(put(1, 3), None);
        store.submit(put(1, 4), None);
        store.submit(
            StoreOp::DeleteMessage {
                queue_id: 1,
                seq: 4,
            },
            None,
        );
        // Deleting what is not there is not an error.
        store.submit(
            StoreOp::DeleteMessage {
                queue_id: 9,
                seq: 9,
            },
            None,
        );
        store.flush();
        assert_eq!(store.backlog(), 0);
    }
    let store = open(&dir);
    let snapshot = load(&store);
    assert_eq!(snapshot.vhosts, ["/", "other"]);
    assert_eq!(snapshot.exchanges, [exchange("ex1")]);
    assert_eq!(snapshot.queues, [queue(1, "q1"), queue(2, "q2")]);
    assert_eq!(snapshot.bindings, [binding("q1", "a.#")]);
    assert_eq!(keys(&snapshot), [(1, 3), (1, 5), (2, 7)]);
    for (_, seq, m) in &snapshot.messages {
        assert_eq!(*m, *message(*seq));
    }
}

#[test]
fn group_commit_batches_and_resolves_tickets() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    let n: u64 = 10_000;
    for seq in 0..n - 1 {
        store.submit(put(1, seq), None);
    }
    let last = ticket(&store, put(1, n - 1));
    last.blocking_recv().unwrap();
    // The counter drops before tickets resolve.
    assert_eq!(store.backlog(), 0);
    let snapshot = load(&store);
    assert_eq!(snapshot.messages.len(), 10_000);
    assert!(keys(&snapshot).windows(2).all(|w| w[0] < w[1]));
    let commits = store.commit_count();
    assert!(commits < n, "{commits} commits for {n} ops: no batching");
}

#[test]
fn delete_queue_removes_only_its_messages() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    store.submit(StoreOp::PutQueue(queue(1, "q1")), None);
    store.submit(StoreOp::PutQueue(queue(2, "q2")), None);
    for (q, s) in [(1, 0), (1, 1), (1, u64::MAX), (2, 0), (2, 1), (0, u64::MAX)] {
        store.submit(put(q, s), None);
    }
    store.submit(
        StoreOp::DeleteQueue {
            id: 1,
            vhost: "/".to_owned(),
            name: "q1".to_owned(),
        },
        None,
    );
    store.flush();
    let snapshot = load(&store);
    assert_eq!(snapshot.queues, [queue(2, "q2")]);
    assert_eq!(keys(&snapshot), [(0, u64::MAX), (2, 0), (2, 1)]);
}

#[test]
fn drop_without_flush_keeps_everything_submitted() {
    let dir = TempDir::new().unwrap();
    let tickets: Vec<_> = {
        let store = open(&dir);
        store.submit(StoreOp::PutQueue(queue(1, "q1")), None);
        let tickets = (0..100).map(|s| ticket(&store, put(1, s))).collect();
        // More without tickets, submitted just before the drop.
        for s in 100..200 {
            store.submit(put(1, s), None);
        }
        tickets
    };
    // Drop committed the outstanding work before the thread exited.
    for t in tickets {
        t.blocking_recv().unwrap();
    }
    let store = open(&dir);
    let snapshot = load(&store);
    assert_eq!(snapshot.queues.len(), 1);
    assert_eq!(snapshot.messages.len(), 200);
}

#[test]
fn resolved_tickets_survive_reopen() {
    let dir = TempDir::new().unwrap();
    {
        let store = open(&dir);
        for s in 0..10 {
            ticket(&store, put(3, s)).blocking_recv().unwrap();
        }
    }
    let store = open(&dir);
    assert_eq!(load(&store).messages.len(), 10);
}

#[test]
fn newer_format_version_is_refused() {
    let dir = TempDir::new().unwrap();
    drop(open(&dir));
    {
        let db = redb::Database::open(dir.path().join("switchyard.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(META)
            .unwrap()
            .insert(FORMAT_VERSION_KEY, 2)
            .unwrap();
        txn.commit().unwrap();
    }
    let err = RedbStore::open(dir.path()).unwrap_err().to_string();
    assert!(err.contains("format version 2"), "{err}");
    assert!(err.contains("upgrade"), "{err}");
}

#[test]
fn second_open_of_the_same_file_is_an_error() {
    let dir = TempDir::new().unwrap();
    let _store = open(&dir);
    let err = RedbStore::open(dir.path()).unwrap_err().to_string();
    assert!(err.contains("switchyard.redb"), "{err}");
}

#[test]
fn corrupt_rows_are_skipped() {
    let dir = TempDir::new().unwrap();
    {
        let store = open(&dir);
        store.submit(StoreOp::PutQueue(queue(1, "q1")), None);
        store.submit(put(1, 1), None);
        store.submit(put(1, 3), None);
    }
    {
        let db = redb::Database::open(dir.path().join("switchyard.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut messages = txn.open_table(MESSAGES).unwrap();
            messages.insert((1, 2), [0xff_u8; 3].as_slice()).unwrap();
            let mut exchanges = txn.open_table(EXCHANGES).unwrap();
            exchanges
                .insert(("/", "bad"), [0xff_u8].as_slice())
                .unwrap();
            // A valid record under the wrong key.
            let mut queues = txn.open_table(QUEUES).unwrap();
            let q = postcard::to_allocvec(&queue(5, "q5")).unwrap();
            queues.insert(("/", "elsewhere"), q.as_slice()).unwrap();
        }
        txn.commit().unwrap();
    }
    let store = open(&dir);
    let snapshot = load(&store);
    assert!(snapshot.exchanges.is_empty());
    assert_eq!(snapshot.queues, [queue(1, "q1")]);
    assert_eq!(keys(&snapshot), [(1, 1), (1, 3)]);
}

#[test]
fn retained_messages_round_trip_and_clear() {
    let dir = TempDir::new().expect("tempdir");
    {
        let store = RedbStore::open(dir.path()).expect("open");
        for topic in ["a/b", "a/c", "gone"] {
            store.submit(
                StoreOp::PutRetained {
                    vhost: "/".into(),
                    key: topic.into(),
                    message: message(1),
                },
                None,
            );
        }
        store.submit(
            StoreOp::DeleteRetained {
                vhost: "/".into(),
                key: "gone".into(),
            },
            None,
        );
        let (tx, rx) = oneshot::channel();
        store.submit(StoreOp::Barrier, Some(tx));
        rx.blocking_recv().expect("durable");
    }
    let store = RedbStore::open(dir.path()).expect("reopen");
    let snapshot = store.load().expect("load");
    let keys: Vec<&str> = snapshot
        .retained
        .iter()
        .map(|(_, k, _)| k.as_str())
        .collect();
    assert_eq!(keys, ["a/b", "a/c"]);
    assert_eq!(snapshot.retained[0].2, *message(1));
}

#[test]
fn adapter_state_round_trips_and_deletes() {
    let dir = TempDir::new().expect("tempdir");
    {
        let store = RedbStore::open(dir.path()).expect("open");
        for (key, value) in [("a", vec![1u8, 2]), ("b", vec![3]), ("gone", vec![4])] {
            store.submit(
                StoreOp::PutState {
                    namespace: "mqtt-session".into(),
                    key: key.into(),
                    value,
                },
                None,
            );
        }
        store.submit(
            StoreOp::PutState {
                namespace: "other".into(),
                key: "a".into(),
                value: vec![9],
            },
            None,
        );
        store.submit(
            StoreOp::DeleteState {
                namespace: "mqtt-session".into(),
                key: "gone".into(),
            },
            None,
        );
        let (tx, rx) = oneshot::channel();
        store.submit(StoreOp::Barrier, Some(tx));
        rx.blocking_recv().expect("durable");
    }
    let store = RedbStore::open(dir.path()).expect("reopen");
    let snapshot = store.load().expect("load");
    assert_eq!(
        snapshot.state,
        [
            ("mqtt-session".to_owned(), "a".to_owned(), vec![1, 2]),
            ("mqtt-session".to_owned(), "b".to_owned(), vec![3]),
            ("other".to_owned(), "a".to_owned(), vec![9]),
        ]
    );
}
