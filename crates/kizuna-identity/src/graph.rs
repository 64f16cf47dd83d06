use crate::identifier::{IdKind, Identifier};
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

impl Link {
    /// A stable key for the set of identifiers and the trust flag: the same link stored twice is one row.
    pub fn signature(&self) -> String {
        let mut keys: Vec<String> = self.identifiers.iter().map(Identifier::key).collect();
        keys.sort();
        keys.dedup();
        format!("{}|{}", if self.trusted { "t" } else { "u" }, keys.join("\u{1f}"))
    }
}

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
    pub store_link: Option<Link>,
}

type NodeId = u32;
type ClusterId = u32;

#[derive(Debug, Clone)]
struct Node {
    identifier: Identifier,
    owner: Option<ProfileId>,
    cluster: ClusterId,
}

#[derive(Debug, Clone)]
struct StoredLink {
    nodes: Vec<NodeId>,
    order: OrderKey,
    trusted: bool,
}

/// Identifiers connected through any link, applied or not: the scope of a replay.
#[derive(Debug, Clone, Default)]
struct Cluster {
    nodes: Vec<NodeId>,
    links: Vec<StoredLink>,
    by_signature: HashMap<(Vec<NodeId>, bool), usize>,
    max_order: Option<OrderKey>,
}

/// The in-memory identity graph: which profile owns each identifier, and the links that made it so.
#[derive(Debug, Clone, Default)]
pub struct IdentityGraph {
    rules: IdentityRules,
    nodes: Vec<Option<Node>>,
    index: HashMap<Identifier, NodeId>,
    profiles: HashMap<ProfileId, Vec<NodeId>>,
    clusters: HashMap<ClusterId, Cluster>,
    next_cluster: ClusterId,
    next_profile: ProfileId,
}

#[derive(Default)]
struct StepLog {
    merges: Vec<MergeRecord>,
    conflicts: Vec<ConflictRecord>,
    created: Vec<ProfileId>,
    removed: Vec<ProfileId>,
    touched: Vec<NodeId>,
}

impl IdentityGraph {
    pub fn new(rules: IdentityRules) -> Self {
        Self { rules, next_profile: 1, ..Self::default() }
    }

    /// Rebuilds the graph from what the store persisted: identifier owners and links.
    pub fn restore(
        rules: IdentityRules,
        owners: impl IntoIterator<Item = (Identifier, Option<ProfileId>)>,
        links: impl IntoIterator<Item = Link>,
        next_profile: ProfileId,
    ) -> Self {
        let mut graph = Self::new(rules);
        for (identifier, owner) in owners {
            let node = graph.intern(&identifier);
            if let Some(profile) = owner {
                graph.set_owner(node, Some(profile));
                graph.next_profile = graph.next_profile.max(profile + 1);
            }
        }
        for link in links {
            let nodes: Vec<NodeId> = link.identifiers.iter().map(|id| graph.intern(id)).collect();
            let cluster = graph.union_clusters(&nodes);
            graph.remember_link(cluster, nodes, link.order, link.trusted);
        }
        graph.next_profile = graph.next_profile.max(next_profile);
        graph
    }

    pub fn profile_of(&self, identifier: &Identifier) -> Option<ProfileId> {
        self.index.get(identifier).and_then(|&n| self.node(n).owner)
    }

    pub fn identifiers_of(&self, profile: ProfileId) -> Vec<Identifier> {
        let mut ids: Vec<Identifier> = self
            .profiles
            .get(&profile)
            .map(|nodes| nodes.iter().map(|&n| self.node(n).identifier.clone()).collect())
            .unwrap_or_default();
        ids.sort();
        ids
    }

    pub fn profile_count(&self) -> usize {
        self.profiles.len()
    }

    pub fn next_profile_id(&self) -> ProfileId {
        self.next_profile
    }

    /// Every identifier grouped by profile; identifiers no profile holds stand alone. Order-free, for comparing.
    pub fn grouping(&self) -> BTreeSet<BTreeSet<Identifier>> {
        let mut groups: BTreeSet<BTreeSet<Identifier>> =
            self.profiles.keys().map(|&p| self.identifiers_of(p).into_iter().collect()).collect();
        for node in self.nodes.iter().flatten() {
            if node.owner.is_none() {
                groups.insert(BTreeSet::from([node.identifier.clone()]));
            }
        }
        groups
    }

    /// Applies one message's link and says what changed.
    pub fn apply(&mut self, link: &Link) -> Outcome {
        debug_assert!(!link.identifiers.is_empty(), "a message always carries an identifier");
        let nodes: Vec<NodeId> = link.identifiers.iter().map(|id| self.intern(id)).collect();
        let cluster_id = self.union_clusters(&nodes);
        let mut signature = nodes.clone();
        signature.sort_unstable();
        let cluster = self.clusters.get(&cluster_id).expect("cluster exists after union");
        let known =
            cluster.by_signature.get(&(signature.clone(), link.trusted)).map(|&i| cluster.links[i].order.clone());
        let in_order = cluster.max_order.as_ref().is_none_or(|max| link.order >= *max);
        match known {
            Some(earlier) if earlier <= link.order => {
                // The same identifiers were linked before: applying them again changes nothing.
                let profile = self.node(nodes[0]).owner.unwrap_or_else(|| self.claim_alone(nodes[0]));
                Outcome { profile, ..Outcome::default() }
            }
            _ if in_order => {
                self.remember_link(cluster_id, nodes.clone(), link.order.clone(), link.trusted);
                let mut log = StepLog::default();
                let profile = self.step(&nodes, &link.order, link.trusted, &mut log);
                self.outcome(profile, log, Some(link.clone()))
            }
            _ => {
                self.remember_link(cluster_id, nodes.clone(), link.order.clone(), link.trusted);
                self.replay(cluster_id, &nodes, link)
            }
        }
    }

    /// The stored links that touch any identifier of this profile.
    pub fn links_of(&self, profile: ProfileId) -> Vec<Link> {
        let Some(nodes) = self.profiles.get(&profile) else { return Vec::new() };
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        for &n in nodes {
            let Some(cluster) = self.clusters.get(&self.node(n).cluster) else { continue };
            for (i, link) in cluster.links.iter().enumerate() {
                if link.nodes.contains(&n) && seen.insert((self.node(n).cluster, i)) {
                    out.push(Link {
                        identifiers: link.nodes.iter().map(|&m| self.node(m).identifier.clone()).collect(),
                        order: link.order.clone(),
                        trusted: link.trusted,
                    });
                }
            }
        }
        out
    }

    /// Removes a profile and its identifiers for good (erasure); returns the identifiers removed.
    pub fn erase(&mut self, profile: ProfileId) -> Vec<Identifier> {
        let Some(nodes) = self.profiles.remove(&profile) else { return Vec::new() };
        let mut removed = Vec::with_capacity(nodes.len());
        for &n in &nodes {
            if let Some(node) = self.nodes[n as usize].take() {
                self.index.remove(&node.identifier);
                if let Some(cluster) = self.clusters.get_mut(&node.cluster) {
                    cluster.nodes.retain(|&m| m != n);
                    cluster.links.retain(|l| !l.nodes.contains(&n));
                    cluster.by_signature =
                        cluster.links.iter().enumerate().map(|(i, l)| ((sorted(&l.nodes), l.trusted), i)).collect();
                    cluster.max_order = cluster.links.iter().map(|l| l.order.clone()).max();
                }
                removed.push(node.identifier);
            }
        }
        removed
    }

    fn node(&self, n: NodeId) -> &Node {
        self.nodes[n as usize].as_ref().expect("live node")
    }

    fn node_mut(&mut self, n: NodeId) -> &mut Node {
        self.nodes[n as usize].as_mut().expect("live node")
    }

    fn intern(&mut self, identifier: &Identifier) -> NodeId {
        if let Some(&n) = self.index.get(identifier) {
            return n;
        }
        let n = self.nodes.len() as NodeId;
        let cluster = self.next_cluster;
        self.next_cluster += 1;
        self.nodes.push(Some(Node { identifier: identifier.clone(), owner: None, cluster }));
        self.index.insert(identifier.clone(), n);
        self.clusters.insert(cluster, Cluster { nodes: vec![n], ..Cluster::default() });
        n
    }

    fn set_owner(&mut self, n: NodeId, owner: Option<ProfileId>) {
        let old = self.node(n).owner;
        if old == owner {
            return;
        }
        if let Some(old) = old
            && let Some(members) = self.profiles.get_mut(&old)
        {
            members.retain(|&m| m != n);
            if members.is_empty() {
                self.profiles.remove(&old);
            }
        }
        if let Some(new) = owner {
            self.profiles.entry(new).or_default().push(n);
        }
        self.node_mut(n).owner = owner;
    }

    fn claim_alone(&mut self, n: NodeId) -> ProfileId {
        let profile = self.new_profile_id();
        self.set_owner(n, Some(profile));
        profile
    }

    fn new_profile_id(&mut self) -> ProfileId {
        let id = self.next_profile;
        self.next_profile += 1;
        id
    }

    fn union_clusters(&mut self, nodes: &[NodeId]) -> ClusterId {
        let mut ids: Vec<ClusterId> = nodes.iter().map(|&n| self.node(n).cluster).collect();
        ids.sort_unstable();
        ids.dedup();
        // Keep the largest cluster and fold the others into it, so relabelling stays cheap.
        let keep = *ids
            .iter()
            .max_by_key(|c| (self.clusters.get(c).map_or(0, |c| c.nodes.len()), std::cmp::Reverse(**c)))
            .expect("at least one node");
        for other in ids.into_iter().filter(|&c| c != keep) {
            let Some(folded) = self.clusters.remove(&other) else { continue };
            for &n in &folded.nodes {
                self.node_mut(n).cluster = keep;
            }
            let target = self.clusters.get_mut(&keep).expect("kept cluster exists");
            target.nodes.extend(folded.nodes);
            for link in folded.links {
                let signature = (sorted(&link.nodes), link.trusted);
                target.by_signature.insert(signature, target.links.len());
                target.links.push(link);
            }
            target.max_order = target.max_order.take().max(folded.max_order);
        }
        keep
    }

    fn remember_link(&mut self, cluster_id: ClusterId, nodes: Vec<NodeId>, order: OrderKey, trusted: bool) {
        let cluster = self.clusters.get_mut(&cluster_id).expect("cluster exists");
        let signature = (sorted(&nodes), trusted);
        match cluster.by_signature.get(&signature) {
            Some(&i) => {
                if order < cluster.links[i].order {
                    cluster.links[i].order = order.clone();
                }
            }
            None => {
                cluster.by_signature.insert(signature, cluster.links.len());
                cluster.links.push(StoredLink { nodes, order: order.clone(), trusted });
            }
        }
        if cluster.max_order.as_ref().is_none_or(|max| order > *max) {
            cluster.max_order = Some(order);
        }
    }

    fn check(
        &self,
        acc: &[NodeId],
        other: &[NodeId],
        both_existing: bool,
        trusted: bool,
    ) -> Result<(), ConflictReason> {
        let user_id = |nodes: &[NodeId]| {
            nodes.iter().map(|&n| &self.node(n).identifier).find(|id| id.kind == IdKind::UserId).cloned()
        };
        if let (Some(existing), Some(incoming)) = (user_id(acc), user_id(other))
            && existing != incoming
        {
            return Err(ConflictReason::UserIdConflict { existing: existing.value, incoming: incoming.value });
        }
        let mut kinds: Vec<&IdKind> = other.iter().map(|&n| &self.node(n).identifier.kind).collect();
        kinds.sort();
        kinds.dedup();
        for kind in kinds {
            let count = acc.iter().chain(other).filter(|&&n| self.node(n).identifier.kind == *kind).count();
            let limit = self.rules.limit(kind);
            if count > limit {
                return Err(ConflictReason::LimitReached { kind: kind.as_str().to_owned(), limit });
            }
        }
        let strong = |nodes: &[NodeId]| nodes.iter().any(|&n| self.node(n).identifier.kind.is_strong());
        if both_existing && !trusted && strong(acc) && strong(other) {
            let other_profile = other.first().and_then(|&n| self.node(n).owner).unwrap_or_default();
            return Err(ConflictReason::UntrustedMerge { other_profile });
        }
        Ok(())
    }

    /// One greedy step: fold the link's identifiers, in priority order, into the profile of the first one.
    fn step(&mut self, nodes: &[NodeId], order: &OrderKey, trusted: bool, log: &mut StepLog) -> ProfileId {
        let mut acc_profile: Option<ProfileId> = None;
        let mut acc_new: Vec<NodeId> = Vec::new();
        let conflict = |log: &mut StepLog, profile, identifier: &Identifier, reason| {
            log.conflicts.push(ConflictRecord {
                profile,
                identifier: identifier.clone(),
                reason,
                message_id: order.message_id.clone(),
                at_ms: order.at_ms,
            });
        };
        for &n in nodes {
            let owner = self.node(n).owner;
            if acc_profile.is_none() && acc_new.is_empty() {
                match owner {
                    Some(p) => acc_profile = Some(p),
                    None => acc_new.push(n),
                }
                continue;
            }
            let mut acc: Vec<NodeId> = acc_profile.map(|p| self.profiles[&p].clone()).unwrap_or_default();
            acc.extend(&acc_new);
            match owner {
                Some(p) if Some(p) == acc_profile => {}
                Some(p) => {
                    let other = self.profiles[&p].clone();
                    match self.check(&acc, &other, acc_profile.is_some(), trusted) {
                        Err(reason) => conflict(log, acc_profile, &self.node(n).identifier.clone(), reason),
                        Ok(()) => match acc_profile {
                            None => acc_profile = Some(p),
                            Some(into) => {
                                for &m in &other {
                                    self.set_owner(m, Some(into));
                                    log.touched.push(m);
                                }
                                log.removed.push(p);
                                log.merges.push(MergeRecord {
                                    into,
                                    from: p,
                                    identifier: self.node(n).identifier.clone(),
                                    message_id: order.message_id.clone(),
                                    at_ms: order.at_ms,
                                    replayed: false,
                                });
                            }
                        },
                    }
                }
                None => match self.check(&acc, &[n], false, trusted) {
                    Ok(()) => acc_new.push(n),
                    Err(reason) => conflict(log, acc_profile, &self.node(n).identifier.clone(), reason),
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

    fn outcome(&self, profile: ProfileId, log: StepLog, store_link: Option<Link>) -> Outcome {
        let mut touched = log.touched;
        touched.sort_unstable();
        touched.dedup();
        let owner_changes = touched.iter().map(|&n| (self.node(n).identifier.clone(), self.node(n).owner)).collect();
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
    fn replay(&mut self, cluster_id: ClusterId, link_nodes: &[NodeId], link: &Link) -> Outcome {
        let cluster = self.clusters.get(&cluster_id).expect("cluster exists");
        let members = cluster.nodes.clone();
        let mut links = cluster.links.clone();
        links.sort_by(|a, b| a.order.cmp(&b.order));

        // Replay on a scratch graph holding only this cluster.
        let mut scratch = IdentityGraph::new(self.rules.clone());
        let local: HashMap<NodeId, NodeId> =
            members.iter().map(|&n| (n, scratch.intern(&self.node(n).identifier))).collect();
        let mut new_link_conflicts = Vec::new();
        for stored in &links {
            let mapped: Vec<NodeId> = stored.nodes.iter().map(|n| local[n]).collect();
            let mut log = StepLog::default();
            scratch.step(&mapped, &stored.order, stored.trusted, &mut log);
            if stored.order == link.order && stored.nodes == link_nodes {
                new_link_conflicts = log.conflicts;
            }
        }

        // Group the cluster's identifiers by their scratch profile, biggest group first.
        let mut groups: HashMap<ProfileId, Vec<NodeId>> = HashMap::new();
        for &n in &members {
            if let Some(p) = scratch.node(local[&n]).owner {
                groups.entry(p).or_default().push(n);
            }
        }
        let mut groups: Vec<Vec<NodeId>> = groups.into_values().collect();
        groups.sort_by_key(|g| (std::cmp::Reverse(g.len()), g.iter().min().copied()));

        let old_owner: HashMap<NodeId, Option<ProfileId>> = members.iter().map(|&n| (n, self.node(n).owner)).collect();
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
                    let weight = match self.node(*n).identifier.kind {
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
        let mut assignment: Vec<(Vec<NodeId>, ProfileId)> = Vec::new();
        for (group, id) in groups.into_iter().zip(chosen) {
            let id = id.unwrap_or_else(|| {
                let p = self.new_profile_id();
                created.push(p);
                used.push(p);
                p
            });
            assignment.push((group, id));
        }

        let mut new_owner: HashMap<NodeId, Option<ProfileId>> = members.iter().map(|&n| (n, None)).collect();
        for (group, id) in &assignment {
            for n in group {
                new_owner.insert(*n, Some(*id));
            }
        }
        let mut owner_changes = Vec::new();
        let mut regrouped: Vec<ProfileId> = Vec::new();
        for &n in &members {
            let (old, new) = (old_owner[&n], new_owner[&n]);
            if old != new {
                self.set_owner(n, new);
                owner_changes.push((self.node(n).identifier.clone(), new));
                regrouped.extend(old);
                regrouped.extend(new);
            }
        }
        regrouped.sort_unstable();
        regrouped.dedup();
        let removed: Vec<ProfileId> = old_profiles.iter().copied().filter(|p| !used.contains(p)).collect();
        let trigger = self.node(link_nodes[0]).identifier.clone();
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
        let profile = match self.node(link_nodes[0]).owner {
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
            store_link: Some(link.clone()),
        }
    }
}

fn sorted(nodes: &[NodeId]) -> Vec<NodeId> {
    let mut s = nodes.to_vec();
    s.sort_unstable();
    s
}

#[cfg(test)]
mod tests;
