//! The pure registry: which node names are registered, by which connection, with which
//! creation; and the old/unused names that remember their creation counters (spec §4).
//!
//! No I/O and no clock: the server passes an opaque [`ConnId`], a display number for DUMP's
//! `fd = F`, and the current Unix time. Every operation is O(log n) in the number of
//! registrations, so lookups do not slow down as registrations grow.

pub mod creation;
pub mod limits;

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use crate::protocol::{NodeInfo, NodeName};

pub use limits::Limits;

/// An opaque connection identity handed out by the server; the registry never interprets it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// A live registration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registration {
    /// What the node registered, as received.
    pub info: NodeInfo,
    /// The connection that owns it: the registration lives exactly as long as it.
    pub conn: ConnId,
    /// The number DUMP prints as `fd = F`.
    pub fd: u32,
    /// The slot's 32-bit creation counter.
    pub creation: u32,
    /// Unix time of the registration.
    pub registered_at: u64,
}

/// An old/unused name slot: what remains of a registration after it ended (spec §4.4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OldEntry {
    /// The name last registered in this slot.
    pub name: NodeName,
    /// The port it last had.
    pub port: u16,
    /// The `fd = F` it last had.
    pub fd: u32,
    /// The slot's creation counter, bumped on re-registration of the same name.
    pub creation: u32,
}

/// Why a registration was refused by the registry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegisterError {
    /// The name is registered by another connection.
    Duplicate {
        /// The connection that owns the name.
        owner: ConnId,
    },
    /// The connection already owns a registration.
    ConnectionBusy,
    /// [`Limits::max_registrations`] are registered already.
    Full,
}

impl fmt::Display for RegisterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegisterError::Duplicate { .. } => f.write_str("node name already occupied"),
            RegisterError::ConnectionBusy => f.write_str("connection already registered a node"),
            RegisterError::Full => f.write_str("too many registrations"),
        }
    }
}

impl std::error::Error for RegisterError {}

/// Why a registry could not be rebuilt from a saved state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestoreError {
    /// Two live registrations share a name.
    DuplicateName,
    /// Two live registrations share a connection.
    DuplicateConnection,
    /// Two old slots share a name, or an old slot names a live registration.
    DuplicateOldName,
}

impl fmt::Display for RestoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RestoreError::DuplicateName => "two registrations share a name",
            RestoreError::DuplicateConnection => "two registrations share a connection",
            RestoreError::DuplicateOldName => "an old name is listed twice or is registered",
        })
    }
}

impl std::error::Error for RestoreError {}

/// Registrations and old names.
#[derive(Debug, Default)]
pub struct Registry {
    limits: Limits,
    next_seq: u64,
    /// Live registrations by sequence number: iteration from the back is newest first.
    live: BTreeMap<u64, Registration>,
    live_by_name: HashMap<NodeName, u64>,
    live_by_conn: HashMap<ConnId, u64>,
    /// Old slots by sequence number: iteration from the front is oldest first.
    old: BTreeMap<u64, OldEntry>,
    old_by_name: HashMap<NodeName, u64>,
}

impl Registry {
    /// An empty registry with the given limits.
    pub fn new(limits: Limits) -> Registry {
        Registry {
            limits,
            ..Registry::default()
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Changes the registration cap (existing registrations above it stay).
    pub fn set_max_registrations(&mut self, max: usize) {
        self.limits.max_registrations = max;
    }

    /// Rebuilds a registry from saved registrations and old slots, both oldest first (the
    /// order [`oldest_first`](Self::oldest_first) and [`old_entries`](Self::old_entries)
    /// give), keeping their creations, fds and times, so NAMES order is unchanged.
    pub fn restore(
        limits: Limits,
        live: Vec<Registration>,
        old: Vec<OldEntry>,
    ) -> Result<Registry, RestoreError> {
        let mut r = Registry::new(limits);
        for slot in old {
            if r.old_by_name.contains_key(&slot.name) {
                return Err(RestoreError::DuplicateOldName);
            }
            let seq = r.next_seq();
            r.old_by_name.insert(slot.name.clone(), seq);
            r.old.insert(seq, slot);
        }
        for reg in live {
            if r.live_by_name.contains_key(&reg.info.name) {
                return Err(RestoreError::DuplicateName);
            }
            if r.old_by_name.contains_key(&reg.info.name) {
                return Err(RestoreError::DuplicateOldName);
            }
            if r.live_by_conn.contains_key(&reg.conn) {
                return Err(RestoreError::DuplicateConnection);
            }
            let seq = r.next_seq();
            r.live_by_name.insert(reg.info.name.clone(), seq);
            r.live_by_conn.insert(reg.conn, seq);
            r.live.insert(seq, reg);
        }
        Ok(r)
    }

    /// Live registrations, oldest first (the order [`restore`](Self::restore) takes).
    pub fn oldest_first(&self) -> impl Iterator<Item = &Registration> {
        self.live.values()
    }

    /// Registers `info` for `conn`; returns the slot's 32-bit creation counter.
    ///
    /// Creation (spec §4.3): a name in the old list takes its slot back with the counter
    /// bumped; otherwise, when the old list holds more than the threshold, the oldest old
    /// slot is recycled with its counter unchanged; otherwise a new slot starts at
    /// `now_unix + 1`.
    pub fn register(
        &mut self,
        conn: ConnId,
        fd: u32,
        info: NodeInfo,
        now_unix: u64,
    ) -> Result<u32, RegisterError> {
        if let Some(seq) = self.live_by_name.get(&info.name) {
            return Err(RegisterError::Duplicate {
                owner: self.live[seq].conn,
            });
        }
        if self.live_by_conn.contains_key(&conn) {
            return Err(RegisterError::ConnectionBusy);
        }
        if self.live.len() >= self.limits.max_registrations {
            return Err(RegisterError::Full);
        }
        let creation = if let Some(seq) = self.old_by_name.remove(&info.name) {
            let slot = self
                .old
                .remove(&seq)
                .expect("old index points at an old slot");
            creation::bump(slot.creation)
        } else if self.old.len() > self.limits.old_list_threshold {
            let (_, slot) = self.old.pop_first().expect("old list is not empty");
            self.old_by_name.remove(&slot.name);
            slot.creation
        } else {
            creation::initial(now_unix)
        };
        let seq = self.next_seq();
        self.live_by_name.insert(info.name.clone(), seq);
        self.live_by_conn.insert(conn, seq);
        self.live.insert(
            seq,
            Registration {
                info,
                conn,
                fd,
                creation,
                registered_at: now_unix,
            },
        );
        Ok(creation)
    }

    /// Ends the registration owned by `conn`, if any, moving it to the old list.
    pub fn unregister_conn(&mut self, conn: ConnId) -> Option<Registration> {
        let seq = self.live_by_conn.remove(&conn)?;
        Some(self.retire(seq))
    }

    /// Ends the registration of `name` (STOP_REQ), moving it to the old list; returns it so
    /// that the caller can close its connection.
    pub fn unregister_name(&mut self, name: &[u8]) -> Option<Registration> {
        let name = std::str::from_utf8(name).ok()?;
        let seq = *self.live_by_name.get(name)?;
        self.live_by_conn.remove(&self.live[&seq].conn);
        Some(self.retire(seq))
    }

    /// The registration of `name`, compared byte for byte.
    pub fn lookup(&self, name: &NodeName) -> Option<&Registration> {
        self.live_by_name.get(name).map(|seq| &self.live[seq])
    }

    /// The registration owned by `conn`.
    pub fn by_conn(&self, conn: ConnId) -> Option<&Registration> {
        self.live_by_conn.get(&conn).map(|seq| &self.live[seq])
    }

    /// Live registrations, most recently registered first (NAMES and DUMP order).
    pub fn newest_first(&self) -> impl Iterator<Item = &Registration> {
        self.live.values().rev()
    }

    /// Old/unused slots, oldest first (DUMP order).
    pub fn old_entries(&self) -> impl Iterator<Item = &OldEntry> {
        self.old.values()
    }

    /// A number that changes whenever the set of live registrations changes (cache key for
    /// rendered NAMES replies).
    pub fn generation(&self) -> u64 {
        self.next_seq
    }

    /// Number of live registrations.
    pub fn len(&self) -> usize {
        self.live.len()
    }

    /// True when nothing is registered.
    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    /// Number of old/unused slots.
    pub fn old_len(&self) -> usize {
        self.old.len()
    }

    /// Checks the internal indexes against each other; used by tests and fuzz targets.
    ///
    /// # Panics
    /// If any invariant is broken: duplicate names, a registration without exactly one
    /// owning connection, or an index pointing nowhere.
    pub fn assert_invariants(&self) {
        assert_eq!(self.live.len(), self.live_by_name.len());
        assert_eq!(self.live.len(), self.live_by_conn.len());
        for (seq, reg) in &self.live {
            assert_eq!(self.live_by_name.get(&reg.info.name), Some(seq));
            assert_eq!(self.live_by_conn.get(&reg.conn), Some(seq));
            assert!(!self.old_by_name.contains_key(&reg.info.name));
        }
        assert_eq!(self.old.len(), self.old_by_name.len());
        for (seq, slot) in &self.old {
            assert_eq!(self.old_by_name.get(&slot.name), Some(seq));
        }
    }

    fn retire(&mut self, seq: u64) -> Registration {
        let reg = self
            .live
            .remove(&seq)
            .expect("index points at a live registration");
        self.live_by_name.remove(&reg.info.name);
        let old_seq = self.next_seq();
        self.old_by_name.insert(reg.info.name.clone(), old_seq);
        self.old.insert(
            old_seq,
            OldEntry {
                name: reg.info.name.clone(),
                port: reg.info.port,
                fd: reg.fd,
                creation: reg.creation,
            },
        );
        reg
    }

    fn next_seq(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }
}

#[cfg(test)]
mod tests;
