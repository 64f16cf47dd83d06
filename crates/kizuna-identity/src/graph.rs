use crate::identifier::{IdKind, Identifier};
use crate::paged::{Paged, TextPages};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap};

pub type ProfileId = u64;

/// The order in which links are applied: event time, then message id to break ties.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct OrderKey {
    pub at_ms: i64,
    pub message_id: String,
}

/// The identifiers one message carries, in priority order (see [`IdKind`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub identifiers: Vec<Identifier>,
    pub order: OrderKey,
    pub trusted: bool,
}

/// A link as the store keeps it: under an id the graph hands out in increasing order, so a new link's row is
/// appended, and a later change (an earlier time, an erasure) finds its row by that id. Keyed by the set of
/// identifiers, every new link was written at a random place in a text index (10% of the WAL under live traffic).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredLink {
    pub id: LinkId,
    pub link: Link,
}

pub type LinkId = u64;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityRules {
    /// Most identifiers of one kind a profile may hold, by kind name; `user_id` is always 1.
    pub max_per_kind: HashMap<String, usize>,
    /// Limit for kinds not listed (custom kinds).
    pub default_max: usize,
}

impl Default for IdentityRules {
    fn default() -> Self {
        let max_per_kind =
            [("anonymous_id", 100), ("email", 5), ("phone", 5), ("line_user_id", 3)].map(|(k, v)| (k.to_owned(), v));
        Self { max_per_kind: max_per_kind.into_iter().collect(), default_max: 5 }
    }
}

impl IdentityRules {
    fn limit(&self, kind: &IdKind) -> usize {
        match kind {
            IdKind::UserId => 1,
            other => self.max_per_kind.get(other.as_str()).copied().unwrap_or(self.default_max),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "rule", rename_all = "snake_case")]
pub enum ConflictReason {
    /// The profile already holds another userId.
    UserIdConflict { existing: String, incoming: String },
    /// The profile already holds the most identifiers of this kind that it may.
    LimitReached { kind: String, limit: usize },
    /// Two identified profiles may only be merged by a trusted source.
    UntrustedMerge { other_profile: ProfileId },
}

/// A link the resolver declined to apply, kept so the decision can be explained.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConflictRecord {
    pub profile: Option<ProfileId>,
    pub identifier: Identifier,
    pub reason: ConflictReason,
    pub message_id: String,
    pub at_ms: i64,
}

/// `from` was merged into `into` because message `message_id` carried `identifier`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MergeRecord {
    pub into: ProfileId,
    pub from: ProfileId,
    pub identifier: Identifier,
    pub message_id: String,
    pub at_ms: i64,
    /// True when the merge came from replaying a cluster after a late message, not from one message alone.
    pub replayed: bool,
}

/// What applying one link changed; the store persists exactly this.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// The profile the message belongs to.
    pub profile: ProfileId,
    pub created: Vec<ProfileId>,
    /// Profiles that no longer exist (merged away or emptied by a replay).
    pub removed: Vec<ProfileId>,
    /// Identifiers whose owning profile changed (`None`: no profile holds it).
    pub owner_changes: Vec<(Identifier, Option<ProfileId>)>,
    pub merges: Vec<MergeRecord>,
    pub conflicts: Vec<ConflictRecord>,
    /// Profiles whose events must be re-attributed to the owners of their identifiers (after merges/replays).
    pub regrouped: Vec<ProfileId>,
    /// The link to persist, when it is new or now has an earlier time.
    pub store_link: Option<StoredLink>,
}

type NodeId = u32;
type ClusterId = u32;
type KindId = u16;

const NO_NODE: NodeId = NodeId::MAX;

/// FNV-1a: a fixed hash, so orders and indexes computed from it are the same on every run and machine.
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for byte in *part {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        hash ^= 0xff;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// The order links are applied in: event time, then a fixed hash of the message id (a total order that needs
/// no stored message id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Order {
    at_ms: i64,
    tie: u64,
}

/// Before every real order: what a cluster without links holds as its latest.
const NO_ORDER: Order = Order { at_ms: i64::MIN, tie: 0 };

impl Order {
    fn of(key: &OrderKey) -> Self {
        Self { at_ms: key.at_ms, tie: fnv1a(&[key.message_id.as_bytes()]) }
    }
}

/// One identifier. Its value lives in the graph's arena; 32 bytes a node keep large graphs in memory.
#[derive(Debug, Clone)]
struct Node {
    value_start: u32,
    value_len: u32,
    kind: KindId,
    alive: bool,
    /// 0 = no profile holds it (profile ids start at 1).
    owner: ProfileId,
    cluster: ClusterId,
    /// The next identifier of the same owner: a profile's identifiers are a list threaded through its nodes.
    next_of_owner: NodeId,
}

/// One link of a cluster, read in place.
#[derive(Debug, Clone, Copy)]
struct LinkView<'a> {
    order: Order,
    trusted: bool,
    nodes: &'a [NodeId],
    id: LinkId,
    /// Where the link's record starts in the cluster's words.
    at: usize,
}

/// Words of a link record before its identifiers: the order's time and tie (two words each), the link's id (two
/// words), then the number of identifiers with the trust flag in the top bit.
const LINK_HEAD: usize = 7;
const LINK_LEN: usize = 6;
const TRUSTED_BIT: u32 = 1 << 31;

/// Identifiers connected through any link, applied or not: the scope of a replay.
///
/// Packed into one exactly sized allocation of words: the number of identifiers, the identifiers, then each link
/// as [`LINK_HEAD`] words followed by its identifiers in priority order, as the message carried them. There is
/// one cluster per person, so this is most of what the graph holds per profile: three vectors and their
/// boxed header took ~224 bytes for a typical cluster (2.6 identifiers, 3.1 links) where the words took ~112
/// (~137 since each link keeps its stored id).
/// A change rebuilds the words, which costs what reading them costs; every change of a cluster already reads all
/// of its links (to find whether the link is known).
#[derive(Debug, Clone)]
struct Cluster {
    words: Box<[u32]>,
}

fn order_words(order: Order) -> [u32; 4] {
    let (at, tie) = (order.at_ms as u64, order.tie);
    [at as u32, (at >> 32) as u32, tie as u32, (tie >> 32) as u32]
}

fn order_of_words(words: &[u32]) -> Order {
    let wide = |low: u32, high: u32| u64::from(low) | (u64::from(high) << 32);
    Order { at_ms: wide(words[0], words[1]) as i64, tie: wide(words[2], words[3]) }
}

/// Appends a link record to `words`.
fn push_link_words(words: &mut Vec<u32>, nodes: &[NodeId], order: Order, trusted: bool, id: LinkId) {
    // A message carries one identifier per kind; more than 65,535 are not kept.
    let nodes = &nodes[..nodes.len().min(usize::from(u16::MAX))];
    words.extend_from_slice(&order_words(order));
    words.extend_from_slice(&[id as u32, (id >> 32) as u32]);
    words.push(nodes.len() as u32 | if trusted { TRUSTED_BIT } else { 0 });
    words.extend_from_slice(nodes);
}

impl Cluster {
    fn of(node: NodeId) -> Self {
        Self { words: Box::new([1, node]) }
    }

    /// Packs identifiers and links.
    fn pack<'a>(nodes: &[NodeId], links: impl IntoIterator<Item = LinkView<'a>>) -> Self {
        let mut words = Vec::with_capacity(1 + nodes.len());
        words.push(nodes.len() as u32);
        words.extend_from_slice(nodes);
        for link in links {
            push_link_words(&mut words, link.nodes, link.order, link.trusted, link.id);
        }
        Self { words: words.into_boxed_slice() }
    }

    fn nodes(&self) -> &[NodeId] {
        &self.words[1..][..self.words[0] as usize]
    }

    fn links(&self) -> impl Iterator<Item = LinkView<'_>> + '_ {
        let mut at = 1 + self.words[0] as usize;
        std::iter::from_fn(move || {
            let head = self.words.get(at..at + LINK_HEAD)?;
            let len = (head[LINK_LEN] & !TRUSTED_BIT) as usize;
            let start = at + LINK_HEAD;
            let link = LinkView {
                order: order_of_words(head),
                trusted: head[LINK_LEN] & TRUSTED_BIT != 0,
                id: u64::from(head[4]) | (u64::from(head[5]) << 32),
                nodes: &self.words[start..start + len],
                at,
            };
            at = start + len;
            Some(link)
        })
    }

    /// The order of the link with these identifiers and trust if there is one, and the latest link's order
    /// ([`NO_ORDER`] while there is none): what every message asks of its cluster, read in one pass.
    fn known_and_latest(&self, nodes: &[NodeId], trusted: bool) -> (Option<Order>, Order) {
        let wanted = sorted(nodes);
        let (mut known, mut latest) = (None, NO_ORDER);
        for link in self.links() {
            latest = latest.max(link.order);
            if known.is_none()
                && link.trusted == trusted
                && link.nodes.len() == nodes.len()
                && sorted(link.nodes) == wanted
            {
                known = Some(link.order);
            }
        }
        (known, latest)
    }

    fn find_link(&self, nodes: &[NodeId], trusted: bool) -> Option<LinkView<'_>> {
        let wanted = sorted(nodes);
        self.links().find(|l| l.trusted == trusted && l.nodes.len() == nodes.len() && sorted(l.nodes) == wanted)
    }

    /// Moves the link recorded at `at` (see [`LinkView::at`]) to an earlier order.
    fn set_order(&mut self, at: usize, order: Order) {
        self.words[at..at + 4].copy_from_slice(&order_words(order));
    }

    fn push_link(&mut self, nodes: &[NodeId], order: Order, trusted: bool, id: LinkId) {
        let mut words = Vec::with_capacity(self.words.len() + LINK_HEAD + nodes.len());
        words.extend_from_slice(&self.words);
        push_link_words(&mut words, nodes, order, trusted, id);
        self.words = words.into_boxed_slice();
    }

    fn absorb(&mut self, other: Cluster) {
        let nodes = [self.nodes(), other.nodes()].concat();
        *self = Cluster::pack(&nodes, self.links().chain(other.links()));
    }

    /// Drops an identifier and every link that carried it (erasure).
    fn forget(&mut self, node: NodeId) {
        let nodes: Vec<NodeId> = self.nodes().iter().copied().filter(|&m| m != node).collect();
        *self = Cluster::pack(&nodes, self.links().filter(|l| !l.nodes.contains(&node)));
    }
}

/// The in-memory identity graph: which profile owns each identifier, and the links that made it so.
#[derive(Debug, Clone, Default)]
pub struct IdentityGraph {
    rules: IdentityRules,
    kinds: Vec<IdKind>,
    /// Identifier values, and the nodes, clusters and profile heads below, are in pages (see [`Paged`]).
    arena: TextPages,
    nodes: Paged<Node>,
    /// Live identifiers by the hash of kind and value. The table holds node numbers only (4 bytes a slot, where a
    /// map from hash to node took 16) and compares candidates' values in the arena, so collisions are exact.
    index: hashbrown::HashTable<NodeId>,
    /// The first identifier of each profile, indexed by profile id (ids are dense: the graph hands them out);
    /// [`NO_NODE`] where no profile (or no longer one) has that id. A map of vectors was 90 bytes a profile.
    profile_heads: Paged<NodeId>,
    profile_count: usize,
    /// Indexed by cluster id: restore numbers the clusters it leaves densely; after it, each new identifier
    /// starts one more, and folding leaves `None` behind (16 bytes a slot).
    clusters: Paged<Option<Cluster>>,
    next_profile: ProfileId,
    /// The id the next new link gets (ids start at 1).
    next_link: LinkId,
}

/// What one greedy step changed, before it becomes an [`Outcome`].
#[derive(Default)]
struct StepLog {
    merges: Vec<MergeRecord>,
    conflicts: Vec<ConflictRecord>,
    created: Vec<ProfileId>,
    removed: Vec<ProfileId>,
    touched: Vec<NodeId>,
}

fn sorted(nodes: &[NodeId]) -> Vec<NodeId> {
    let mut s = nodes.to_vec();
    s.sort_unstable();
    s
}

/// The index's hash of an identifier: FNV-1a, finished so that both the low bits (the bucket) and the top bits
/// (the table's tag byte) depend on every input byte.
fn hash_of(kind: KindId, value: &str) -> u64 {
    let hash = fnv1a(&[&kind.to_le_bytes(), value.as_bytes()]);
    let mixed = (hash ^ (hash >> 31)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    mixed ^ (mixed >> 32)
}

/// [`hash_of`] a node, for the index to rehash when it grows (free of `self`: the index is borrowed mutably).
fn node_hash(nodes: &Paged<Node>, arena: &TextPages, n: NodeId) -> u64 {
    let node = &nodes[n as usize];
    hash_of(node.kind, arena.get(node.value_start, node.value_len))
}

/// The first `n` items of `slice`, which moves past them.
fn take_front<'a, T>(slice: &mut &'a [T], n: usize) -> &'a [T] {
    let (front, rest) = slice.split_at(n);
    *slice = rest;
    front
}

fn owner_of(raw: ProfileId) -> Option<ProfileId> {
    (raw != 0).then_some(raw)
}

impl IdentityGraph {
    pub fn new(rules: IdentityRules) -> Self {
        Self { rules, next_profile: 1, ..Self::default() }
    }

    /// Rebuilds the graph from what the store persisted: identifier owners and links.
    pub fn restore(
        rules: IdentityRules,
        owners: impl IntoIterator<Item = (Identifier, Option<ProfileId>)>,
        links: impl IntoIterator<Item = StoredLink>,
        next_profile: ProfileId,
    ) -> Self {
        let mut graph = Self::new(rules);
        for (identifier, owner) in owners {
            graph.restore_owner(&identifier, owner);
        }
        for link in links {
            graph.restore_link(&link);
        }
        graph.finish_restore(next_profile);
        graph
    }

    /// Restores one persisted identifier and its owner (streaming restore, with [`Self::restore_link`]).
    pub fn restore_owner(&mut self, identifier: &Identifier, owner: Option<ProfileId>) {
        let node = self.intern(identifier);
        if let Some(profile) = owner {
            self.set_owner(node, Some(profile));
            self.next_profile = self.next_profile.max(profile + 1);
        }
    }

    /// Restores one persisted link without applying it (its effect is already in the owners).
    pub fn restore_link(&mut self, stored: &StoredLink) {
        let link = &stored.link;
        let nodes: Vec<NodeId> = link.identifiers.iter().map(|id| self.intern(id)).collect();
        let cluster = self.union_clusters(&nodes);
        self.remember_link(cluster, &nodes, Order::of(&link.order), link.trusted, Some(stored.id));
    }

    pub fn finish_restore(&mut self, next_profile: ProfileId) {
        self.next_profile = self.next_profile.max(next_profile).max(1);
        self.repack_clusters();
        let Self { index, nodes, arena, .. } = self;
        index.shrink_to_fit(|&n| node_hash(nodes, arena, n));
    }

    /// Restoring started a cluster per identifier and folded most of them away (two in three in a real store),
    /// rebuilding the survivors as they grew. The folded ones leave holes all over the allocator's pages for their
    /// sizes, which no page ever becomes empty enough to return, and only the restoring thread could refill.
    /// Copying every cluster out to one flat buffer, freeing them all, then allocating each again packs them into
    /// fresh pages and lets the emptied ones go. With recommendations' histories repacked the same way, a server
    /// holding 118k profiles went from ~200 to ~171 MB resident (BENCHMARKS.md, memory). The survivors are also
    /// numbered afresh, so the cluster table has one slot per cluster rather than one per identifier.
    fn repack_clusters(&mut self) {
        let live = || self.clusters.iter().flatten();
        let mut lengths = Vec::with_capacity(live().count());
        let mut words = Vec::with_capacity(live().map(|c| c.words.len()).sum());
        for slot in self.clusters.iter_mut() {
            if let Some(cluster) = slot.take() {
                lengths.push(cluster.words.len());
                words.extend_from_slice(&cluster.words);
            }
        }
        self.clusters = Paged::default();
        let mut rest = &words[..];
        for length in lengths {
            let cluster = Cluster { words: take_front(&mut rest, length).into() };
            let id = self.clusters.len() as ClusterId;
            for &n in cluster.nodes() {
                self.nodes[n as usize].cluster = id;
            }
            self.clusters.push(Some(cluster));
        }
    }

    pub fn profile_of(&self, identifier: &Identifier) -> Option<ProfileId> {
        self.find(identifier).and_then(|n| owner_of(self.nodes[n as usize].owner))
    }

    pub fn identifiers_of(&self, profile: ProfileId) -> Vec<Identifier> {
        let mut ids: Vec<Identifier> = self.members(profile).map(|n| self.identifier(n)).collect();
        ids.sort();
        ids
    }

    pub fn profile_count(&self) -> usize {
        self.profile_count
    }

    /// Profiles that hold at least one identifier.
    pub fn profile_ids(&self) -> impl Iterator<Item = ProfileId> + '_ {
        self.profile_heads.iter().enumerate().filter(|(_, head)| **head != NO_NODE).map(|(p, _)| p as ProfileId)
    }

    /// A profile's identifiers, newest holder first.
    fn members(&self, profile: ProfileId) -> impl Iterator<Item = NodeId> + '_ {
        let head = usize::try_from(profile).ok().and_then(|p| self.profile_heads.get(p)).copied().unwrap_or(NO_NODE);
        std::iter::successors((head != NO_NODE).then_some(head), |&n| {
            let next = self.nodes[n as usize].next_of_owner;
            (next != NO_NODE).then_some(next)
        })
    }

    fn member_list(&self, profile: ProfileId) -> Vec<NodeId> {
        self.members(profile).collect()
    }

    pub fn next_profile_id(&self) -> ProfileId {
        self.next_profile
    }

    /// Every identifier grouped by profile; identifiers no profile holds stand alone. Order-free, for comparing.
    pub fn grouping(&self) -> BTreeSet<BTreeSet<Identifier>> {
        let mut groups: BTreeSet<BTreeSet<Identifier>> =
            self.profile_ids().map(|p| self.identifiers_of(p).into_iter().collect()).collect();
        for (n, node) in self.nodes.iter().enumerate() {
            if node.alive && node.owner == 0 {
                groups.insert(BTreeSet::from([self.identifier(n as NodeId)]));
            }
        }
        groups
    }

    /// Applies one message's link and says what changed.
    pub fn apply(&mut self, link: &Link) -> Outcome {
        debug_assert!(!link.identifiers.is_empty(), "a message always carries an identifier");
        let nodes: Vec<NodeId> = link.identifiers.iter().map(|id| self.intern(id)).collect();
        let cluster_id = self.union_clusters(&nodes);
        let order = Order::of(&link.order);
        let (known, latest) = self.cluster(cluster_id).known_and_latest(&nodes, link.trusted);
        let in_order = order >= latest;
        match known {
            Some(earlier) if earlier <= order => {
                // The same identifiers were linked before: applying them again changes nothing.
                let owner = owner_of(self.nodes[nodes[0] as usize].owner);
                let profile = owner.unwrap_or_else(|| self.claim_alone(nodes[0]));
                Outcome { profile, ..Outcome::default() }
            }
            _ if in_order => {
                let id = self.remember_link(cluster_id, &nodes, order, link.trusted, None);
                let mut log = StepLog::default();
                let profile = self.step(&nodes, &link.order, link.trusted, &mut log);
                self.outcome(profile, log, Some(StoredLink { id, link: link.clone() }))
            }
            _ => {
                let id = self.remember_link(cluster_id, &nodes, order, link.trusted, None);
                self.replay(cluster_id, &nodes, StoredLink { id, link: link.clone() })
            }
        }
    }

    /// Ids of the stored links that touch any identifier of this profile.
    pub fn link_ids_of(&self, profile: ProfileId) -> Vec<LinkId> {
        let mut out = Vec::new();
        for n in self.members(profile) {
            let Some(cluster) = self.live_cluster(self.nodes[n as usize].cluster) else { continue };
            out.extend(cluster.links().filter(|l| l.nodes.contains(&n)).map(|l| l.id));
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Removes a profile and its identifiers for good (erasure); returns the identifiers removed.
    pub fn erase(&mut self, profile: ProfileId) -> Vec<Identifier> {
        let nodes = self.member_list(profile);
        let mut removed = Vec::with_capacity(nodes.len());
        for &n in &nodes {
            self.set_owner(n, None);
            let identifier = self.identifier(n);
            let hash = node_hash(&self.nodes, &self.arena, n);
            if let Ok(entry) = self.index.find_entry(hash, |&m| m == n) {
                entry.remove();
            }
            let node = &mut self.nodes[n as usize];
            node.alive = false;
            let cluster_id = node.cluster;
            if let Some(cluster) = self.clusters.get_mut(cluster_id as usize).and_then(Option::as_mut) {
                cluster.forget(n);
            }
            removed.push(identifier);
        }
        removed
    }

    fn kind_id(&self, kind: &IdKind) -> Option<KindId> {
        self.kinds.iter().position(|k| k == kind).map(|i| i as KindId)
    }

    fn value(&self, n: NodeId) -> &str {
        let node = &self.nodes[n as usize];
        self.arena.get(node.value_start, node.value_len)
    }

    fn kind(&self, n: NodeId) -> &IdKind {
        &self.kinds[self.nodes[n as usize].kind as usize]
    }

    fn identifier(&self, n: NodeId) -> Identifier {
        Identifier { kind: self.kind(n).clone(), value: self.value(n).to_owned() }
    }

    fn find(&self, identifier: &Identifier) -> Option<NodeId> {
        let kind = self.kind_id(&identifier.kind)?;
        let hash = hash_of(kind, &identifier.value);
        self.index.find(hash, |&n| self.nodes[n as usize].kind == kind && self.value(n) == identifier.value).copied()
    }

    fn intern(&mut self, identifier: &Identifier) -> NodeId {
        if let Some(n) = self.find(identifier) {
            return n;
        }
        let kind = match self.kind_id(&identifier.kind) {
            Some(k) => k,
            None => {
                self.kinds.push(identifier.kind.clone());
                (self.kinds.len() - 1) as KindId
            }
        };
        let n = self.nodes.len() as NodeId;
        let cluster = self.clusters.len() as ClusterId;
        let value_start = self.arena.push(&identifier.value);
        self.nodes.push(Node {
            value_start,
            value_len: identifier.value.len() as u32,
            kind,
            alive: true,
            owner: 0,
            cluster,
            next_of_owner: NO_NODE,
        });
        let Self { index, nodes, arena, .. } = self;
        index.insert_unique(hash_of(kind, &identifier.value), n, |&m| node_hash(nodes, arena, m));
        self.clusters.push(Some(Cluster::of(n)));
        n
    }

    fn set_owner(&mut self, n: NodeId, owner: Option<ProfileId>) {
        let old = owner_of(self.nodes[n as usize].owner);
        if old == owner {
            return;
        }
        if let Some(old) = old {
            self.unlink_member(old, n);
        }
        if let Some(new) = owner {
            let index = new as usize;
            if index >= self.profile_heads.len() {
                self.profile_heads.grow_to(index + 1, NO_NODE);
            }
            let head = self.profile_heads[index];
            if head == NO_NODE {
                self.profile_count += 1;
            }
            self.nodes[n as usize].next_of_owner = head;
            self.profile_heads[index] = n;
        }
        self.nodes[n as usize].owner = owner.unwrap_or(0);
    }

    /// Takes `n` out of its owner's list (lists are short: the identity rules cap identifiers per kind).
    fn unlink_member(&mut self, profile: ProfileId, n: NodeId) {
        let index = profile as usize;
        let next = std::mem::replace(&mut self.nodes[n as usize].next_of_owner, NO_NODE);
        if self.profile_heads[index] == n {
            self.profile_heads[index] = next;
            if next == NO_NODE {
                self.profile_count -= 1;
            }
            return;
        }
        let mut at = self.profile_heads[index];
        while at != NO_NODE {
            let following = self.nodes[at as usize].next_of_owner;
            if following == n {
                self.nodes[at as usize].next_of_owner = next;
                return;
            }
            at = following;
        }
    }

    fn claim_alone(&mut self, n: NodeId) -> ProfileId {
        let profile = self.new_profile_id();
        self.set_owner(n, Some(profile));
        profile
    }

    fn new_profile_id(&mut self) -> ProfileId {
        let id = self.next_profile.max(1);
        self.next_profile = id + 1;
        id
    }

    /// A live cluster: every node's cluster id names one (folding relabels the nodes of the folded one).
    fn cluster(&self, id: ClusterId) -> &Cluster {
        self.live_cluster(id).expect("a node's cluster is live")
    }

    fn live_cluster(&self, id: ClusterId) -> Option<&Cluster> {
        self.clusters.get(id as usize).and_then(Option::as_ref)
    }

    fn cluster_mut(&mut self, id: ClusterId) -> &mut Cluster {
        self.clusters[id as usize].as_mut().expect("a node's cluster is live")
    }

    fn union_clusters(&mut self, nodes: &[NodeId]) -> ClusterId {
        let mut ids: Vec<ClusterId> = nodes.iter().map(|&n| self.nodes[n as usize].cluster).collect();
        ids.sort_unstable();
        ids.dedup();
        // Keep the largest cluster and fold the others into it, so relabelling stays cheap.
        let keep = *ids
            .iter()
            .max_by_key(|&&c| (self.cluster(c).nodes().len(), std::cmp::Reverse(c)))
            .expect("at least one node");
        for other in ids.into_iter().filter(|&c| c != keep) {
            let Some(folded) = self.clusters[other as usize].take() else { continue };
            for &n in folded.nodes() {
                self.nodes[n as usize].cluster = keep;
            }
            self.cluster_mut(keep).absorb(folded);
        }
        keep
    }

    /// Records a link (or its earlier order) in its cluster and says its id: `restored` when it comes from the
    /// store, the next free id when it is new.
    fn remember_link(
        &mut self,
        cluster_id: ClusterId,
        nodes: &[NodeId],
        order: Order,
        trusted: bool,
        restored: Option<LinkId>,
    ) -> LinkId {
        // A restored id is taken, whether or not the link was already known (rows this code writes never repeat
        // a link, but a new link must never reuse a stored id).
        let next = self.next_link.max(1).max(restored.map_or(0, |id| id + 1));
        self.next_link = next;
        let cluster = self.cluster_mut(cluster_id);
        match cluster.find_link(nodes, trusted).map(|l| (l.at, l.order, l.id)) {
            Some((at, known, id)) => {
                if order < known {
                    cluster.set_order(at, order);
                }
                id
            }
            None => {
                let id = restored.unwrap_or(next);
                cluster.push_link(nodes, order, trusted, id);
                self.next_link = next.max(id + 1);
                id
            }
        }
    }

    fn check(
        &self,
        acc: &[NodeId],
        other: &[NodeId],
        both_existing: bool,
        trusted: bool,
    ) -> Result<(), ConflictReason> {
        let user_id = |nodes: &[NodeId]| nodes.iter().copied().find(|&n| *self.kind(n) == IdKind::UserId);
        if let (Some(existing), Some(incoming)) = (user_id(acc), user_id(other))
            && self.value(existing) != self.value(incoming)
        {
            return Err(ConflictReason::UserIdConflict {
                existing: self.value(existing).to_owned(),
                incoming: self.value(incoming).to_owned(),
            });
        }
        let mut kinds: Vec<KindId> = other.iter().map(|&n| self.nodes[n as usize].kind).collect();
        kinds.sort_unstable();
        kinds.dedup();
        for kind in kinds {
            let count = acc.iter().chain(other).filter(|&&n| self.nodes[n as usize].kind == kind).count();
            let kind = &self.kinds[kind as usize];
            let limit = self.rules.limit(kind);
            if count > limit {
                return Err(ConflictReason::LimitReached { kind: kind.as_str().to_owned(), limit });
            }
        }
        let strong = |nodes: &[NodeId]| nodes.iter().any(|&n| self.kind(n).is_strong());
        if both_existing && !trusted && strong(acc) && strong(other) {
            let other_profile = other.first().map(|&n| self.nodes[n as usize].owner).unwrap_or_default();
            return Err(ConflictReason::UntrustedMerge { other_profile });
        }
        Ok(())
    }

    /// One greedy step: fold the link's identifiers, in priority order, into the profile of the first one.
    /// `record` names the message in merge and conflict records.
    fn step(&mut self, nodes: &[NodeId], record: &OrderKey, trusted: bool, log: &mut StepLog) -> ProfileId {
        let mut acc_profile: Option<ProfileId> = None;
        let mut acc_new: Vec<NodeId> = Vec::new();
        for &n in nodes {
            let owner = owner_of(self.nodes[n as usize].owner);
            if acc_profile.is_none() && acc_new.is_empty() {
                match owner {
                    Some(p) => acc_profile = Some(p),
                    None => acc_new.push(n),
                }
                continue;
            }
            if owner.is_some() && owner == acc_profile {
                continue;
            }
            let mut acc: Vec<NodeId> = acc_profile.map(|p| self.member_list(p)).unwrap_or_default();
            acc.extend(&acc_new);
            let verdict = match owner {
                Some(p) => self.check(&acc, &self.member_list(p), acc_profile.is_some(), trusted),
                None => self.check(&acc, &[n], false, trusted),
            };
            match (verdict, owner) {
                (Err(reason), _) => log.conflicts.push(ConflictRecord {
                    profile: acc_profile,
                    identifier: self.identifier(n),
                    reason,
                    message_id: record.message_id.clone(),
                    at_ms: record.at_ms,
                }),
                (Ok(()), None) => acc_new.push(n),
                (Ok(()), Some(p)) => match acc_profile {
                    None => acc_profile = Some(p),
                    Some(into) => {
                        let moved = self.member_list(p);
                        for &m in &moved {
                            self.set_owner(m, Some(into));
                            log.touched.push(m);
                        }
                        log.removed.push(p);
                        log.merges.push(MergeRecord {
                            into,
                            from: p,
                            identifier: self.identifier(n),
                            message_id: record.message_id.clone(),
                            at_ms: record.at_ms,
                            replayed: false,
                        });
                    }
                },
            }
        }
        let profile = match acc_profile {
            Some(p) => p,
            None => {
                let p = self.new_profile_id();
                log.created.push(p);
                p
            }
        };
        for n in acc_new {
            self.set_owner(n, Some(profile));
            log.touched.push(n);
        }
        // A refused link is explained on the profile the message went to.
        for conflict in log.conflicts.iter_mut().filter(|c| c.profile.is_none()) {
            conflict.profile = Some(profile);
        }
        profile
    }

    fn outcome(&self, profile: ProfileId, log: StepLog, store_link: Option<StoredLink>) -> Outcome {
        let mut touched = log.touched;
        touched.sort_unstable();
        touched.dedup();
        let owner_changes =
            touched.iter().map(|&n| (self.identifier(n), owner_of(self.nodes[n as usize].owner))).collect();
        let regrouped = log.merges.iter().flat_map(|m| [m.from, m.into]).collect();
        Outcome {
            profile,
            created: log.created,
            removed: log.removed,
            owner_changes,
            merges: log.merges,
            conflicts: log.conflicts,
            regrouped,
            store_link,
        }
    }

    /// Re-applies every link of a cluster in time order and maps the result onto the existing profile ids,
    /// keeping each group's id stable where it can.
    fn replay(&mut self, cluster_id: ClusterId, link_nodes: &[NodeId], incoming: StoredLink) -> Outcome {
        let link = &incoming.link;
        // A copy: the graph changes below while the replay still reads the cluster as it was.
        let cluster = self.cluster(cluster_id).clone();
        let mut links: Vec<LinkView<'_>> = cluster.links().collect();
        links.sort_by_key(|l| l.order);
        let members = cluster.nodes();

        // Replay on a scratch graph holding only this cluster.
        let mut scratch = IdentityGraph::new(self.rules.clone());
        let local: HashMap<NodeId, NodeId> =
            members.iter().map(|&n| (n, scratch.intern(&self.identifier(n)))).collect();
        let new_order = Order::of(&link.order);
        let unrecorded = OrderKey { at_ms: 0, message_id: String::new() };
        let mut new_link_conflicts = Vec::new();
        for stored in &links {
            let stored_nodes = stored.nodes;
            let mapped: Vec<NodeId> = stored_nodes.iter().map(|n| local[n]).collect();
            let is_new = stored.order == new_order && stored_nodes == link_nodes;
            let mut log = StepLog::default();
            scratch.step(&mapped, if is_new { &link.order } else { &unrecorded }, stored.trusted, &mut log);
            if is_new {
                new_link_conflicts = log.conflicts;
            }
        }

        // Group the cluster's identifiers by their scratch profile, biggest group first.
        let mut groups: HashMap<ProfileId, Vec<NodeId>> = HashMap::new();
        for &n in members {
            if let Some(p) = owner_of(scratch.nodes[local[&n] as usize].owner) {
                groups.entry(p).or_default().push(n);
            }
        }
        let mut groups: Vec<Vec<NodeId>> = groups.into_values().collect();
        groups.sort_by_key(|g| (std::cmp::Reverse(g.len()), g.iter().min().copied()));

        let old_owner: HashMap<NodeId, Option<ProfileId>> =
            members.iter().map(|&n| (n, owner_of(self.nodes[n as usize].owner))).collect();
        let mut old_profiles: Vec<ProfileId> = old_owner.values().flatten().copied().collect();
        old_profiles.sort_unstable();
        old_profiles.dedup();

        // Each group keeps the old profile id it shares the most weight with; a profile id follows its userId
        // first, then its other strong identifiers, so ids stay stable for the people they name.
        let mut candidates: Vec<(usize, usize, ProfileId)> = Vec::new();
        for (index, group) in groups.iter().enumerate() {
            let mut votes: HashMap<ProfileId, usize> = HashMap::new();
            for n in group {
                if let Some(Some(p)) = old_owner.get(n) {
                    let weight = match self.kind(*n) {
                        IdKind::UserId => 10_000,
                        IdKind::AnonymousId => 1,
                        _ => 100,
                    };
                    *votes.entry(*p).or_default() += weight;
                }
            }
            candidates.extend(votes.into_iter().map(|(p, weight)| (weight, index, p)));
        }
        candidates.sort_by_key(|&(weight, index, p)| (std::cmp::Reverse(weight), index, p));
        let mut chosen: Vec<Option<ProfileId>> = vec![None; groups.len()];
        let mut used: Vec<ProfileId> = Vec::new();
        for (_, index, p) in candidates {
            if chosen[index].is_none() && !used.contains(&p) {
                chosen[index] = Some(p);
                used.push(p);
            }
        }
        let mut created = Vec::new();
        let mut new_owner: HashMap<NodeId, Option<ProfileId>> = members.iter().map(|&n| (n, None)).collect();
        for (group, id) in groups.into_iter().zip(chosen) {
            let id = id.unwrap_or_else(|| {
                let p = self.new_profile_id();
                created.push(p);
                used.push(p);
                p
            });
            for n in group {
                new_owner.insert(n, Some(id));
            }
        }

        let mut owner_changes = Vec::new();
        let mut regrouped: Vec<ProfileId> = Vec::new();
        for &n in members {
            let (old, new) = (old_owner[&n], new_owner[&n]);
            if old != new {
                self.set_owner(n, new);
                owner_changes.push((self.identifier(n), new));
                regrouped.extend(old);
                regrouped.extend(new);
            }
        }
        regrouped.sort_unstable();
        regrouped.dedup();
        let removed: Vec<ProfileId> = old_profiles.iter().copied().filter(|p| !used.contains(p)).collect();
        let trigger = self.identifier(link_nodes[0]);
        let merges = removed
            .iter()
            .filter_map(|&from| {
                let targets: BTreeSet<Option<ProfileId>> =
                    members.iter().filter(|n| old_owner[n] == Some(from)).map(|n| new_owner[n]).collect();
                match targets.into_iter().collect::<Vec<_>>().as_slice() {
                    [Some(into)] => Some(MergeRecord {
                        into: *into,
                        from,
                        identifier: trigger.clone(),
                        message_id: link.order.message_id.clone(),
                        at_ms: link.order.at_ms,
                        replayed: true,
                    }),
                    _ => None,
                }
            })
            .collect();
        let profile = match owner_of(self.nodes[link_nodes[0] as usize].owner) {
            Some(p) => p,
            None => {
                let p = self.claim_alone(link_nodes[0]);
                created.push(p);
                owner_changes.push((trigger, Some(p)));
                p
            }
        };
        Outcome {
            profile,
            created,
            removed,
            owner_changes,
            merges,
            conflicts: new_link_conflicts,
            regrouped,
            store_link: Some(incoming),
        }
    }
}

#[cfg(test)]
mod tests;
