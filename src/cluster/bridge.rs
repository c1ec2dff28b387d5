//! The cluster bridge: one thread per node with a current-thread tokio
//! runtime running the NATS client (docs/cluster.md). It
//!
//! - claims the node's slot at start ([`connect`]);
//! - consumes the relation stream in order and applies every change
//!   through the same path a single node's admin write takes (the
//!   node's store copy, then [`ShardControl::apply`]); the admin API's
//!   writes publish to that stream ([`NatsLog`]);
//! - publishes what the shards hand it ([`ToBridge`]) and hands the
//!   shards what other nodes publish ([`ClusterIn`]);
//! - sends heartbeats, drops nodes that fall silent, and after a NATS
//!   outage asks every node to resend what it holds.
//!
//! Shards never wait for NATS: they push to this thread's channel, and it
//! reaches them through the mesh.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, stream};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot, watch};

use crate::admin::control::{
    BoxFuture, LogError, Pushes, RelationLog, RoomLive, ShardControl, ShardGone, UserLive,
};
use crate::cluster::link::ToBridge;
use crate::cluster::nodes::{Nodes, Seen};
use crate::cluster::wire::{self, NodeMsg};
use crate::config::Config;
use crate::core::room::NodeSlot;
use crate::ids::{ChatId, UserId};
use crate::limits;
use crate::shard::msg::{ClusterIn, ShardMsg};
use crate::shard::{route, Shared};
use crate::store::NetChange;
use crate::store::{Op, Store};

/// The JetStream stream of relation changes.
const REL_STREAM: &str = "CHATD_RELATIONS";
/// Its subject.
const REL_SUBJECT: &str = "chatd.relations";
/// The stream of node slot claims, and its subjects' prefix.
const SLOTS_STREAM: &str = "CHATD_SLOTS";
const SLOTS_SUBJECT: &str = "chatd.slots";
/// The stream of the secrets the nodes agree on (`--jwt-secret`,
/// `--admin-token` where not given), and its subjects' prefix.
const SECRETS_STREAM: &str = "CHATD_SECRETS";
const SECRETS_SUBJECT: &str = "chatd.secrets";
/// Control traffic every node subscribes to.
const CTL_SUBJECT: &str = "chatd.ctl";
/// The admin API's live-state queries, which every node answers.
const QUERY_SUBJECT: &str = "chatd.query";

/// Node `slot`'s own subject: the real-time messages other nodes send
/// it, for every room (docs/cluster.md, "Rooms and real-time messages").
/// One subscription per node, not one per room: each costs memory.
fn rtmsg_subject(slot: NodeSlot) -> String {
    format!("chatd.node.{slot}.rtmsg")
}

/// Why the node could not join the cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cannot reach NATS at {0}: {1}")]
    Connect(String, String),
    #[error("JetStream: {0}")]
    JetStream(String),
    #[error("no free node slot (at most 255 nodes, each with a distinct --node-id)")]
    NoSlot,
    #[error("cluster thread: {0}")]
    Thread(String),
}

/// What the bridge needs once the shards run.
pub struct Attach {
    pub shared: Arc<Shared>,
    pub control: Arc<dyn ShardControl>,
    pub store: Arc<Store>,
    pub rx: mpsc::UnboundedReceiver<ToBridge>,
}

/// A node connected to NATS with its slot, before it has loaded the
/// relations.
pub struct Connected {
    /// This node's slot (the high bits of its client ids).
    pub slot: NodeSlot,
    /// The cluster's secrets, for those this node proposed.
    pub secrets: Secrets,
    /// `--node-id`.
    pub node_id: String,
    attach: oneshot::Sender<Attach>,
    joined: std::sync::mpsc::Receiver<Result<(), ClusterError>>,
    stop: Option<oneshot::Sender<()>>,
    thread: std::thread::JoinHandle<()>,
    log: Arc<NatsLog>,
    /// Live other nodes, kept by the bridge (how many answers a query
    /// waits for).
    live: Arc<AtomicUsize>,
}

/// The JWT secret and the admin token of the cluster: a node given a flag
/// uses its own value (`None` here); for a missing one it proposes its
/// data directory's and gets the value the first node to start stored in
/// JetStream, so tokens minted on any node are valid on every node and
/// one admin token works everywhere (docs/cluster.md, "Secrets").
#[derive(Debug, Clone, Default)]
pub struct Secrets {
    /// The JWT secret (`jwt.secret`).
    pub jwt: Option<String>,
    /// The admin token (`admin.token`).
    pub admin: Option<String>,
}

/// Everything the runtime's tasks share.
struct Node {
    client: async_nats::Client,
    js: jetstream::Context,
    me: wire::From,
    node_id: String,
    timeout_ms: u64,
}

/// Connects to NATS on a thread of its own, claims a slot, and returns
/// once that is done (or failed).
pub fn connect(config: &Config, proposed: Secrets) -> Result<Connected, ClusterError> {
    let urls = config.cluster.clone().unwrap_or_default();
    let node_id = config.node_id.clone().unwrap_or_else(random_id);
    let timeout_ms = config.node_timeout_ms;
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (attach_tx, attach_rx) = oneshot::channel::<Attach>();
    let (joined_tx, joined_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let id = node_id.clone();
    let live = Arc::new(AtomicUsize::new(0));
    let live_nodes = live.clone();
    let thread = std::thread::Builder::new()
        .name("cluster".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(ClusterError::Thread(e.to_string())));
                    return;
                }
            };
            rt.block_on(async move {
                let (events_tx, events_rx) = mpsc::unbounded_channel();
                let node = match start(&urls, id, timeout_ms, events_tx).await {
                    Ok(n) => n,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let (slot, slots) = match claim_slot(&node).await {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let secrets = match agree_secrets(&node, proposed).await {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let node = Arc::new(Node {
                    me: wire::From {
                        slot,
                        incarnation: node.me.incarnation,
                    },
                    ..node
                });
                let (applied_tx, applied_rx) = watch::channel(0u64);
                let log = Arc::new(NatsLog {
                    node: node.clone(),
                    applied: applied_rx,
                    changes: AtomicU64::new(0),
                });
                if ready_tx.send(Ok((slot, secrets, log))).is_err() {
                    return;
                }
                let Ok(attach) = attach_rx.await else {
                    return;
                };
                let wiring = Wiring {
                    applied: applied_tx,
                    joined: joined_tx,
                    events: events_rx,
                    stop: stop_rx,
                    live: live_nodes,
                };
                run(node, slots, attach, wiring).await;
            });
        })
        .map_err(|e| ClusterError::Thread(e.to_string()))?;
    match ready_rx.recv() {
        Ok(Ok((slot, secrets, log))) => Ok(Connected {
            slot,
            secrets,
            node_id,
            attach: attach_tx,
            joined: joined_rx,
            stop: Some(stop_tx),
            thread,
            log,
            live,
        }),
        Ok(Err(e)) => {
            let _ = thread.join();
            Err(e)
        }
        Err(_) => {
            let _ = thread.join();
            Err(ClusterError::Thread(
                "the cluster thread died at start".into(),
            ))
        }
    }
}

impl Connected {
    /// The log the admin API writes relations to.
    pub fn log(&self) -> Arc<dyn RelationLog> {
        self.log.clone()
    }

    /// The admin API's view of the cluster: `shards` (this node's) for
    /// everything, with the live fields of `GET` summed over every node.
    pub fn control(&self, shards: Arc<dyn ShardControl>) -> Arc<dyn ShardControl> {
        Arc::new(ClusterControl {
            shards,
            node: self.log.node.clone(),
            live: self.live.clone(),
        })
    }

    /// Starts the bridge on the running shards, and waits until the
    /// relations in JetStream are loaded into them.
    pub fn attach(self, attach: Attach) -> Result<Running, ClusterError> {
        if self.attach.send(attach).is_err() {
            return Err(ClusterError::Thread("the cluster thread ended".into()));
        }
        match self.joined.recv() {
            Ok(Ok(())) => Ok(Running {
                stop: self.stop,
                thread: Some(self.thread),
                node_id: self.node_id,
            }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(ClusterError::Thread("the cluster thread ended".into())),
        }
    }
}

/// A node in the cluster.
pub struct Running {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// `--node-id`.
    pub node_id: String,
}

impl Running {
    /// Draining: tells the other nodes to drop this node's clients now,
    /// then stops the bridge (what the shards say while they drain is not
    /// published: the others already dropped it all).
    pub fn leave(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.leave();
    }
}

/// A random node id (when `--node-id` is not given).
fn random_id() -> String {
    let mut raw = [0u8; 6];
    let _ = getrandom::fill(&mut raw);
    raw.iter().map(|b| format!("{b:02x}")).collect()
}

/// The NATS servers of `--cluster`: protocol.md section 10 allows one or
/// more comma-separated URLs (async-nats parses a `&str` as one URL, so the
/// list is split here); blanks around commas and empty entries are ignored.
fn server_urls(urls: &str) -> Vec<&str> {
    urls.split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .collect()
}

/// Connects and makes sure the stream and the slot bucket exist.
async fn start(
    urls: &str,
    node_id: String,
    timeout_ms: u64,
    events: mpsc::UnboundedSender<async_nats::Event>,
) -> Result<Node, ClusterError> {
    let wait = Duration::from_millis(limits::CLUSTER_NATS_TIMEOUT_MS);
    let options = async_nats::ConnectOptions::new()
        .name(format!("chatd {node_id}"))
        .no_echo()
        .connection_timeout(wait)
        .retry_on_initial_connect()
        .max_reconnects(None)
        .reconnect_delay_callback(|attempt| {
            // Quick retries first: an outage should end for the cluster
            // within the node timeout of NATS coming back.
            Duration::from_millis((50 * (attempt as u64 + 1)).min(500))
        })
        .event_callback(move |e| {
            let events = events.clone();
            async move {
                let _ = events.send(e);
            }
        });
    let client = tokio::time::timeout(wait, options.connect(server_urls(urls)))
        .await
        .map_err(|_| ClusterError::Connect(urls.into(), "timed out".into()))?
        .map_err(|e| ClusterError::Connect(urls.into(), e.to_string()))?;
    // connect() with retry returns at once; wait for the real connection.
    let deadline = Instant::now() + wait;
    while client.connection_state() != async_nats::connection::State::Connected {
        if Instant::now() > deadline {
            return Err(ClusterError::Connect(urls.into(), "timed out".into()));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut js = jetstream::new(client.clone());
    js.set_timeout(wait);
    js.get_or_create_stream(stream::Config {
        name: REL_STREAM.into(),
        subjects: vec![REL_SUBJECT.into()],
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await
    .map_err(|e| ClusterError::JetStream(format!("relation stream: {e}")))?;
    let mut incarnation = [0u8; 8];
    let _ = getrandom::fill(&mut incarnation);
    Ok(Node {
        client,
        js,
        me: wire::From {
            slot: 0,
            incarnation: u64::from_le_bytes(incarnation),
        },
        node_id,
        timeout_ms,
    })
}

/// Claims the first free slot (or this node id's own, after a restart):
/// one message per slot subject in a stream that keeps the last one per
/// subject for [`limits::CLUSTER_SLOT_TTL_MS`]; a claim is a publish that
/// JetStream refuses if the subject holds one already (the expected last
/// subject sequence 0). One round trip per start, none per login.
async fn claim_slot(node: &Node) -> Result<(NodeSlot, Slots), ClusterError> {
    let stream = node
        .js
        .get_or_create_stream(stream::Config {
            name: SLOTS_STREAM.into(),
            subjects: vec![format!("{SLOTS_SUBJECT}.*")],
            max_messages_per_subject: 1,
            max_age: Duration::from_millis(limits::CLUSTER_SLOT_TTL_MS),
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await
        .map_err(|e| ClusterError::JetStream(format!("slot stream: {e}")))?;
    let me = Bytes::from(node.node_id.clone().into_bytes());
    let max_slot = (1u32 << limits::CLUSTER_SLOT_BITS) - 1;
    for slot in 1..=max_slot {
        let subject = format!("{SLOTS_SUBJECT}.{slot}");
        let claim = jetstream::message::PublishMessage::build()
            .payload(me.clone())
            .expected_last_subject_sequence(0);
        let acked = match node.js.send_publish(subject.clone(), claim).await {
            Ok(ack) => ack.await.map(|_| ()),
            Err(e) => return Err(ClusterError::JetStream(format!("slot claim: {e}"))),
        };
        let slots = Slots {
            js: node.js.clone(),
            subject,
            me: me.clone(),
        };
        match acked {
            Ok(()) => return Ok((slot as NodeSlot, slots)),
            Err(_) => {
                // Held: by this node id before a restart?
                let held = stream.get_last_raw_message_by_subject(&slots.subject).await;
                if held.is_ok_and(|m| m.payload == me) {
                    slots.renew().await;
                    return Ok((slot as NodeSlot, slots));
                }
            }
        }
    }
    Err(ClusterError::NoSlot)
}

/// Agrees with the cluster on each secret this node proposes: the first
/// proposal stored under its subject wins (a publish JetStream refuses if
/// the subject holds one already), and every node reads that one back.
async fn agree_secrets(node: &Node, proposed: Secrets) -> Result<Secrets, ClusterError> {
    if proposed.jwt.is_none() && proposed.admin.is_none() {
        return Ok(proposed);
    }
    let err = |e: String| ClusterError::JetStream(format!("secrets: {e}"));
    let stream = node
        .js
        .get_or_create_stream(stream::Config {
            name: SECRETS_STREAM.into(),
            subjects: vec![format!("{SECRETS_SUBJECT}.*")],
            max_messages_per_subject: 1,
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await
        .map_err(|e| err(e.to_string()))?;
    let mut agreed = Secrets::default();
    for (name, mine, out) in [
        ("jwt", proposed.jwt, &mut agreed.jwt),
        ("admin", proposed.admin, &mut agreed.admin),
    ] {
        let Some(mine) = mine else { continue };
        let subject = format!("{SECRETS_SUBJECT}.{name}");
        let first = jetstream::message::PublishMessage::build()
            .payload(Bytes::from(mine.into_bytes()))
            .expected_last_subject_sequence(0);
        // Refused when another node's proposal is there already: read it.
        if let Ok(ack) = node.js.send_publish(subject.clone(), first).await {
            let _ = ack.await;
        }
        let held = stream
            .get_last_raw_message_by_subject(&subject)
            .await
            .map_err(|e| err(e.to_string()))?;
        let value = String::from_utf8(held.payload.to_vec())
            .map_err(|_| err(format!("{subject} is not UTF-8")))?;
        *out = Some(value);
    }
    Ok(agreed)
}

/// This node's claim on its slot.
struct Slots {
    js: jetstream::Context,
    subject: String,
    me: Bytes,
}

impl Slots {
    /// Renews the claim (before it ages out).
    async fn renew(&self) {
        if let Ok(ack) = self.js.publish(self.subject.clone(), self.me.clone()).await {
            let _ = ack.await;
        }
    }

    /// Gives the slot back (draining).
    async fn release(&self) {
        if let Ok(s) = self.js.get_stream(SLOTS_STREAM).await {
            let _ = s.purge().filter(self.subject.clone()).await;
        }
    }
}

/// The admin API's relation log over JetStream.
pub struct NatsLog {
    node: Arc<Node>,
    /// The last stream sequence this node applied.
    applied: watch::Receiver<u64>,
    /// Changes written by this node (for unique change ids).
    changes: AtomicU64,
}

impl RelationLog for NatsLog {
    fn write(&self, ops: Vec<Op>) -> BoxFuture<Result<(), LogError>> {
        let node = self.node.clone();
        let mut applied = self.applied.clone();
        let n = self.changes.fetch_add(1, Ordering::Relaxed);
        Box::pin(async move {
            let unavailable = |e: String| LogError::Unavailable(e);
            // While disconnected the client would buffer the write and send
            // it after the answer: refuse at once instead, nothing changed.
            if node.client.connection_state() != async_nats::connection::State::Connected {
                return Err(unavailable("not connected to NATS".into()));
            }
            // The state lags a server that just died: one round trip
            // first, so that the publish below is almost never sent into
            // a dead connection (where it would be buffered, answered 503
            // after the ack timeout, and stored after NATS came back:
            // docs/cluster.md, "NATS unavailable").
            let probe = Duration::from_millis(limits::CLUSTER_PROBE_TIMEOUT_MS);
            match tokio::time::timeout(probe, node.js.get_stream(REL_STREAM)).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(unavailable(e.to_string())),
                Err(_) => return Err(unavailable("NATS did not answer".into())),
            }
            let id = [
                node.me.incarnation,
                (u64::from(node.me.slot) << 48) | (n & ((1 << 48) - 1)),
            ];
            let encoded = wire::encode_ops(&ops);
            let mut last = 0;
            for part in wire::split_change(id, &encoded, limits::CLUSTER_PART_BYTES) {
                let ack = node
                    .js
                    .publish(REL_SUBJECT, part)
                    .await
                    .map_err(|e| unavailable(e.to_string()))?
                    .await
                    .map_err(|e| unavailable(e.to_string()))?;
                last = ack.sequence;
            }
            // Durable; answered once applied here (protocol 10).
            applied
                .wait_for(|&a| a >= last)
                .await
                .map_err(|e| unavailable(e.to_string()))?;
            Ok(())
        })
    }
}

/// The bridge's ways in and out besides the shards.
struct Wiring {
    /// The last relation stream sequence applied here.
    applied: watch::Sender<u64>,
    /// Told once the relations are loaded (or loading failed).
    joined: std::sync::mpsc::Sender<Result<(), ClusterError>>,
    /// The NATS client's connection events.
    events: mpsc::UnboundedReceiver<async_nats::Event>,
    /// Draining: say goodbye and stop.
    stop: oneshot::Receiver<()>,
    /// Live other nodes, for the admin API's queries.
    live: Arc<AtomicUsize>,
}

/// The bridge's life once attached.
async fn run(node: Arc<Node>, slots: Slots, attach: Attach, wiring: Wiring) {
    let Wiring {
        applied,
        joined,
        mut events,
        mut stop,
        live,
    } = wiring;
    let Attach {
        shared,
        control,
        store,
        mut rx,
    } = attach;
    // Subscribe before anything is announced: no message sent to this
    // node after the others hear of it (or of its interest) is missed.
    let subscribed = async {
        let ctl = node.client.subscribe(CTL_SUBJECT).await?;
        let queries = node.client.subscribe(QUERY_SUBJECT).await?;
        let rtmsgs = node.client.subscribe(rtmsg_subject(node.me.slot)).await?;
        Ok::<_, async_nats::SubscribeError>((ctl, queries, rtmsgs))
    };
    let (mut ctl, mut queries, mut rtmsgs) = match subscribed.await {
        Ok(s) => s,
        Err(e) => {
            let _ = joined.send(Err(ClusterError::JetStream(e.to_string())));
            return;
        }
    };
    let local = control.clone();
    // Load the relations: consume the stream up to its end as of now.
    let last = match node.js.get_stream(REL_STREAM).await {
        Ok(mut s) => match s.info().await {
            Ok(info) => info.state.last_sequence,
            Err(e) => {
                let _ = joined.send(Err(ClusterError::JetStream(e.to_string())));
                return;
            }
        },
        Err(e) => {
            let _ = joined.send(Err(ClusterError::JetStream(e.to_string())));
            return;
        }
    };
    let mut applied_rx = applied.subscribe();
    let restart = Arc::new(tokio::sync::Notify::new());
    let consumer = tokio::spawn(consume_relations(
        node.clone(),
        store,
        control,
        applied,
        restart.clone(),
    ));
    if applied_rx.wait_for(|&a| a >= last).await.is_err() {
        let _ = joined.send(Err(ClusterError::JetStream(
            "relation consumer stopped".into(),
        )));
        return;
    }
    let mut bridge = Bridge {
        node: node.clone(),
        shared,
        nodes: Nodes::new(node.timeout_ms),
        hello_at: Instant::now(),
        epoch: Instant::now(),
        restart,
        live,
    };
    // Hello: the others drop whatever an earlier run of this slot told
    // them and send what they hold.
    bridge.publish_ctl(&NodeMsg::Hello).await;
    let _ = joined.send(Ok(()));

    let beat = Duration::from_millis((node.timeout_ms / limits::HEARTBEATS_PER_TIMEOUT).max(10));
    let mut heartbeat = tokio::time::interval(beat);
    let renew_every = Duration::from_millis(limits::CLUSTER_SLOT_TTL_MS / 3);
    let mut renew = tokio::time::interval(renew_every);
    let mut disconnected = false;
    loop {
        tokio::select! {
            _ = &mut stop => break,
            Some(msg) = rx.recv() => bridge.on_shard_msg(msg).await,
            Some(msg) = ctl.next() => {
                bridge.on_ctl(&msg.payload).await;
                bridge.count_live();
            }
            Some(msg) = rtmsgs.next() => bridge.on_rtmsg(&msg.payload),
            Some(msg) = queries.next() => {
                // Answered by a task: the shards' answer takes a moment.
                tokio::spawn(answer(node.client.clone(), local.clone(), msg));
            }
            _ = heartbeat.tick() => {
                bridge.tick().await;
                bridge.count_live();
            }
            _ = renew.tick() => slots.renew().await,
            Some(e) = events.recv() => match e {
                async_nats::Event::Disconnected => {
                    tracing::warn!("cluster: NATS connection lost; serving local clients");
                    disconnected = true;
                }
                async_nats::Event::Connected if disconnected => {
                    disconnected = false;
                    tracing::info!("cluster: NATS connection back; resynchronizing");
                    bridge.resync().await;
                    bridge.count_live();
                }
                _ => {}
            },
        }
    }
    // Draining: the others drop this node's clients at once.
    bridge.publish_ctl(&NodeMsg::Bye).await;
    let _ = tokio::time::timeout(Duration::from_secs(1), node.client.flush()).await;
    consumer.abort();
    slots.release().await;
}

/// The bridge's state on its thread.
struct Bridge {
    node: Arc<Node>,
    shared: Arc<Shared>,
    nodes: Nodes,
    /// When this node last said hello (the others' answers follow).
    hello_at: Instant,
    /// Zero of the liveness clock.
    epoch: Instant,
    /// Live other nodes, for [`ClusterControl`].
    live: Arc<AtomicUsize>,
    /// Tells the relation consumer to start again (NATS came back: its
    /// server-side consumer may be gone, and waiting for the client to
    /// notice takes seconds).
    restart: Arc<tokio::sync::Notify>,
}

impl Bridge {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    async fn publish(&self, subject: String, msg: &NodeMsg) {
        let payload = wire::encode(self.node.me, msg);
        if let Err(e) = self.node.client.publish(subject, payload).await {
            tracing::debug!("cluster: publish failed: {e}");
        }
    }

    async fn publish_ctl(&self, msg: &NodeMsg) {
        self.publish(CTL_SUBJECT.into(), msg).await;
    }

    /// Publishes how many other nodes are live (after any change).
    fn count_live(&self) {
        self.live.store(self.nodes.live(), Ordering::Relaxed);
    }

    fn to_shard(&self, to: usize, msg: ClusterIn) {
        self.shared.mesh.send(to, ShardMsg::Cluster(msg));
    }

    fn to_every_shard(&self, make: impl Fn() -> ClusterIn) {
        for to in 0..self.shared.mesh.shards() {
            self.to_shard(to, make());
        }
    }

    /// What a shard wants the other nodes to know.
    async fn on_shard_msg(&mut self, msg: ToBridge) {
        match msg {
            ToBridge::All(msg) => self.publish_ctl(&msg).await,
            ToBridge::To(nodes, msg) => {
                // Encoded once; one publish per node, each on that node's
                // subject, in order on this one connection.
                let payload = wire::encode(self.node.me, &msg);
                for node in nodes {
                    let subject = rtmsg_subject(node);
                    if let Err(e) = self.node.client.publish(subject, payload.clone()).await {
                        tracing::debug!("cluster: publish failed: {e}");
                    }
                }
            }
        }
    }

    /// A control message from another node.
    async fn on_ctl(&mut self, payload: &Bytes) {
        let (from, msg) = match wire::decode(payload) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!("cluster: unreadable control message: {e}");
                return;
            }
        };
        if from.slot == self.node.me.slot {
            // A node that claimed this slot before this one, or a
            // misconfigured twin: never this node's own (no echo).
            return;
        }
        if msg == NodeMsg::Bye {
            if self.nodes.bye(from) {
                tracing::info!(node = from.slot, "cluster: node left");
                self.to_every_shard(|| ClusterIn::NodeGone { node: from.slot });
            }
            return;
        }
        let now = self.now_ms();
        match self.nodes.seen(from, now) {
            Seen::Gone => return,
            Seen::Known => {}
            Seen::Restarted => {
                tracing::info!(node = from.slot, "cluster: node restarted");
                self.to_every_shard(|| ClusterIn::NodeGone { node: from.slot });
            }
            Seen::New => {
                tracing::info!(node = from.slot, "cluster: node joined");
                // A node this one had dropped (or never heard say hello):
                // everyone resends, so nothing it holds is missed. Not
                // while the answers to this node's own hello come in.
                let answering_hello =
                    self.hello_at.elapsed() < Duration::from_millis(self.node.timeout_ms);
                if msg != NodeMsg::Hello && !answering_hello {
                    self.publish_ctl(&NodeMsg::Sync).await;
                }
            }
        }
        let node = from.slot;
        let shards = self.shared.mesh.shards();
        match msg {
            NodeMsg::Heartbeat | NodeMsg::Bye | NodeMsg::RtMsg { .. } => {}
            NodeMsg::Hello => {
                // It forgot what it told; it resends after this.
                self.to_every_shard(|| ClusterIn::NodeGone { node });
                self.to_every_shard(|| ClusterIn::Snapshot);
            }
            NodeMsg::Sync => self.to_every_shard(|| ClusterIn::Snapshot),
            NodeMsg::Interest { chat, on } => {
                self.to_shard(
                    route::room_home(chat, shards),
                    ClusterIn::Interest { chat, node, on },
                );
            }
            NodeMsg::Calls { chat, users } => {
                self.to_shard(
                    route::room_home(chat, shards),
                    ClusterIn::Calls { chat, node, users },
                );
            }
            NodeMsg::Pres {
                user,
                value,
                user_set,
            } => {
                self.to_shard(
                    route::user_home(user, shards),
                    ClusterIn::Pres {
                        user,
                        node,
                        value,
                        user_set,
                    },
                );
            }
        }
    }

    /// A real-time message another node sent this one: to its room's
    /// home shard, in the order it came (docs/cluster.md).
    fn on_rtmsg(&self, payload: &Bytes) {
        match wire::decode(payload) {
            Ok((
                from,
                NodeMsg::RtMsg {
                    chat,
                    to_user,
                    to_client,
                    frame,
                },
            )) if from.slot != self.node.me.slot => {
                let home = route::room_home(chat, self.shared.mesh.shards());
                let msg = ClusterIn::RtMsg {
                    chat,
                    to_user,
                    to_client,
                    frame,
                };
                self.to_shard(home, msg);
            }
            // Another kind, or a twin of this slot: nothing to deliver.
            Ok(_) => {}
            Err(e) => tracing::warn!("cluster: unreadable real-time message: {e}"),
        }
    }

    /// Heartbeat, and drop the nodes that fell silent.
    async fn tick(&mut self) {
        self.publish_ctl(&NodeMsg::Heartbeat).await;
        for node in self.nodes.expire(self.now_ms()) {
            tracing::warn!(node, "cluster: node silent for the node timeout; dropped");
            self.to_every_shard(|| ClusterIn::NodeGone { node });
        }
    }

    /// NATS is back after an outage: what this node holds of others may
    /// be stale and what it told them may be lost. Forget the others,
    /// say hello (they forget this node and resend theirs), resend ours.
    async fn resync(&mut self) {
        self.restart.notify_one();
        for node in self.nodes.forget_all() {
            self.to_every_shard(|| ClusterIn::NodeGone { node });
        }
        self.hello_at = Instant::now();
        self.publish_ctl(&NodeMsg::Hello).await;
        self.to_every_shard(|| ClusterIn::Snapshot);
    }
}

/// Consumes the relation stream in order from the start, applying each
/// complete change to the node's store copy and the shards, one at a
/// time, and reports the last sequence applied.
async fn consume_relations(
    node: Arc<Node>,
    store: Arc<Store>,
    control: Arc<dyn ShardControl>,
    applied: watch::Sender<u64>,
    restart: Arc<tokio::sync::Notify>,
) {
    // Parts of changes not complete yet, by change id.
    let mut partial: HashMap<[u64; 2], Vec<Bytes>> = HashMap::new();
    loop {
        let next = *applied.borrow() + 1;
        let messages = async {
            let s = node
                .js
                .get_stream(REL_STREAM)
                .await
                .map_err(|e| e.to_string())?;
            let c = s
                .create_consumer(consumer::pull::OrderedConfig {
                    filter_subject: REL_SUBJECT.into(),
                    deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                        start_sequence: next,
                    },
                    ..Default::default()
                })
                .await
                .map_err(|e| e.to_string())?;
            c.messages().await.map_err(|e| e.to_string())
        }
        .await;
        let mut messages = match messages {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!("cluster: relation consumer: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        loop {
            let m = tokio::select! {
                m = messages.next() => m,
                _ = restart.notified() => break,
            };
            let Some(m) = m else {
                break;
            };
            let m = match m {
                Ok(m) => m,
                Err(e) => {
                    tracing::debug!("cluster: relation consumer: {e}; recreating");
                    break;
                }
            };
            let Ok(seq) = m.info().map(|i| i.stream_sequence) else {
                continue;
            };
            if seq <= *applied.borrow() {
                continue;
            }
            if let Some(ops) = assemble(&mut partial, &m.payload) {
                let s = store.clone();
                let committed = tokio::task::spawn_blocking(move || s.apply(&ops)).await;
                match committed {
                    Ok(Ok(change)) if !change.is_empty() => {
                        match control.apply(Arc::new(change)).await {
                            Ok(pushes) => {
                                // The write is answered after the change's
                                // presence updates, as on a single node.
                                pushes.0.await;
                                applied.send_replace(seq);
                                continue;
                            }
                            // Stored, not live: the process is ending.
                            Err(gone) => tracing::error!("cluster: relation change {seq}: {gone}"),
                        }
                    }
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => tracing::error!("cluster: relation change {seq}: {e}"),
                    Err(e) => tracing::error!("cluster: relation change {seq}: {e}"),
                }
            }
            applied.send_replace(seq);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Adds a stored part to the changes in progress; a change's operations
/// once all its parts are in.
fn assemble(partial: &mut HashMap<[u64; 2], Vec<Bytes>>, payload: &Bytes) -> Option<Vec<Op>> {
    let part = match wire::decode_part(payload) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!("cluster: unreadable relation change: {e}");
            return None;
        }
    };
    let data = if part.count == 1 {
        part.data.to_vec()
    } else {
        let parts = partial.entry(part.change).or_default();
        if parts.len() != part.index as usize {
            // Out of order or repeated: parts are published in order by
            // one writer, so this is a change whose writer failed midway.
            parts.clear();
            if part.index != 0 {
                partial.remove(&part.change);
                return None;
            }
        }
        let parts = partial.entry(part.change).or_default();
        parts.push(part.data);
        if parts.len() < part.count as usize {
            return None;
        }
        let parts = partial.remove(&part.change).unwrap_or_default();
        parts.concat()
    };
    match wire::decode_ops(&data) {
        Ok(ops) => Some(ops),
        Err(e) => {
            tracing::warn!("cluster: unreadable relation change: {e}");
            None
        }
    }
}

/// Answers another node's live-state query with this node's part.
async fn answer(
    client: async_nats::Client,
    shards: Arc<dyn ShardControl>,
    msg: async_nats::Message,
) {
    let Some(reply) = msg.reply else {
        return;
    };
    let answer = match wire::decode_query(&msg.payload) {
        Ok(wire::Query::Room(chat)) => {
            // A shard that is gone gives no part: no answer (the process
            // is ending).
            let Ok(live) = shards.room_live(chat).await else {
                return;
            };
            wire::Answer::Room {
                joined: live.joined_clients,
                call_users: live.call_users,
            }
        }
        Ok(wire::Query::User(user)) => {
            let Ok(live) = shards.user_live(user).await else {
                return;
            };
            wire::Answer::User {
                statusd: live.statusd_clients,
                chatd: live.chatd_clients,
            }
        }
        Err(e) => {
            tracing::warn!("cluster: unreadable query: {e}");
            return;
        }
    };
    let _ = client.publish(reply, wire::encode_answer(&answer)).await;
}

/// The admin API's [`ShardControl`] in cluster mode: this node's shards,
/// with the live fields of `GET` gathered from every node (protocol 10:
/// they may lag up to a second).
struct ClusterControl {
    shards: Arc<dyn ShardControl>,
    node: Arc<Node>,
    live: Arc<AtomicUsize>,
}

impl ClusterControl {
    /// Every other live node's answer to `q` (those that answer within
    /// [`limits::CLUSTER_QUERY_TIMEOUT_MS`]; none while NATS is away).
    fn gather(&self, q: wire::Query) -> BoxFuture<Vec<wire::Answer>> {
        let client = self.node.client.clone();
        let want = self.live.load(Ordering::Relaxed);
        Box::pin(async move {
            let mut out = Vec::new();
            if want == 0 || client.connection_state() != async_nats::connection::State::Connected {
                return out;
            }
            let inbox = client.new_inbox();
            let Ok(mut sub) = client.subscribe(inbox.clone()).await else {
                return out;
            };
            let sent = client
                .publish_with_reply(QUERY_SUBJECT, inbox, wire::encode_query(q))
                .await;
            if sent.is_err() {
                return out;
            }
            let wait = Duration::from_millis(limits::CLUSTER_QUERY_TIMEOUT_MS);
            let deadline = tokio::time::Instant::now() + wait;
            while out.len() < want {
                match tokio::time::timeout_at(deadline, sub.next()).await {
                    Ok(Some(m)) => {
                        if let Ok(a) = wire::decode_answer(&m.payload) {
                            out.push(a);
                        }
                    }
                    _ => break,
                }
            }
            out
        })
    }
}

impl ShardControl for ClusterControl {
    fn apply(&self, change: Arc<NetChange>) -> BoxFuture<Result<Pushes, ShardGone>> {
        self.shards.apply(change)
    }

    fn room_live(&self, chat: ChatId) -> BoxFuture<Result<RoomLive, ShardGone>> {
        let local = self.shards.room_live(chat);
        let others = self.gather(wire::Query::Room(chat));
        Box::pin(async move {
            let mut live = local.await?;
            for a in others.await {
                if let wire::Answer::Room { joined, call_users } = a {
                    live.joined_clients += joined;
                    live.call_users.extend(call_users);
                }
            }
            live.call_users.sort_unstable();
            live.call_users.dedup();
            // The flag counts distinct users over every node (4.4).
            live.in_call = live.call_users.len() >= 2;
            Ok(live)
        })
    }

    fn user_live(&self, user: UserId) -> BoxFuture<Result<UserLive, ShardGone>> {
        let local = self.shards.user_live(user);
        let others = self.gather(wire::Query::User(user));
        Box::pin(async move {
            // Presence is combined on every node already.
            let mut live = local.await?;
            for a in others.await {
                if let wire::Answer::User { statusd, chatd } = a {
                    live.statusd_clients += statusd;
                    live.chatd_clients += chatd;
                }
            }
            Ok(live)
        })
    }

    fn user_rooms(&self, user: UserId) -> BoxFuture<Result<Vec<ChatId>, ShardGone>> {
        self.shards.user_rooms(user)
    }

    fn metrics_text(&self) -> String {
        self.shards.metrics_text()
    }
}

#[cfg(test)]
mod tests {
    use super::server_urls;

    #[test]
    fn cluster_flag_takes_a_comma_separated_list_of_servers() {
        assert_eq!(server_urls("nats://a:4222"), ["nats://a:4222"]);
        assert_eq!(
            server_urls("nats://a:4222, nats://b:4222,,nats://c:4222 "),
            ["nats://a:4222", "nats://b:4222", "nats://c:4222"]
        );
        // Each entry parses as a server address for async-nats.
        for u in server_urls("nats://127.0.0.1:4222,nats://127.0.0.1:4223") {
            assert!(u.parse::<async_nats::ServerAddr>().is_ok(), "{u}");
        }
    }
}
