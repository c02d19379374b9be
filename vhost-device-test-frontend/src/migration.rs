// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Moving a running driver from one back end to another (vhost-user.rst
//! "Migrating back-end state"), with no VM: both back ends map the same
//! memfd guest RAM, so memory needs no copying, and the driver's queues
//! ([`Virtqueue`](crate::Virtqueue): free list, chains in flight, last used
//! index seen) move from the source session to the destination's.
//!
//! The order is QEMU's (`hw/virtio/vhost.c`, see
//! `/work/shared/research/migration.md` Q1):
//!
//! 1. the destination connects and negotiates: `SET_OWNER`, `GET_FEATURES`,
//!    protocol features, `GET_QUEUE_NUM`, `SET_BACKEND_REQ_FD`
//!    ([`Session::connect_incoming`] → [`Incoming`]);
//! 2. the source stops every ring with `GET_VRING_BASE`
//!    ([`Session::stop_queues`]), which also suspends the device (no guest
//!    memory writes, no notifications: "Suspended device state");
//! 3. with `VHOST_USER_PROTOCOL_F_DEVICE_STATE` on the source, its state is
//!    saved ([`Session::save_state`]) and loaded into the destination:
//!    `SET_DEVICE_STATE_FD(LOAD)`, the blob, close, `CHECK_DEVICE_STATE`
//!    ([`Incoming::load_state`]);
//! 4. only then the destination gets `SET_FEATURES` (the driver's, unchanged),
//!    `SET_MEM_TABLE` with the same RAM, and per queue `SET_VRING_NUM`,
//!    `SET_VRING_BASE` at the source's `last_avail`, `SET_VRING_ADDR`,
//!    `SET_VRING_CALL`, `SET_VRING_KICK`, `SET_VRING_ENABLE`, and a kick
//!    ([`Incoming::resume`]).
//!
//! [`Session::migrate`] (in place) and [`Session::migrate_to`] (by value) do
//! all four steps.
//!
//! Until step 4 succeeds the source keeps everything and can carry on
//! ([`Session::restart_queues`]): "If the migration fails, then the source
//! can transparently resume operation".

use std::path::Path;

use vhost::vhost_user::VhostUserProtocolFeatures;

use crate::{
    load_device_state, start_vring, BackendChannel, Connection, Error, Options, Session, LOG_ALL,
};

/// A destination back end that has negotiated but not started the device.
pub struct Incoming {
    conn: Connection,
}

impl std::fmt::Debug for Incoming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Incoming")
            .field(
                "device_features",
                &format_args!("{:#x}", self.conn.device_features),
            )
            .field("protocol", &self.conn.protocol)
            .finish()
    }
}

/// A failed [`Session::migrate_to`]: the source session, with its queues
/// stopped where they were (restart them with [`Session::restart_queues`]).
#[derive(Debug, thiserror::Error)]
#[error("migration failed; the source is stopped and can be restarted")]
pub struct MigrateError {
    /// The source session.
    pub session: Box<Session>,
    /// What went wrong.
    #[source]
    pub error: Error,
}

impl Incoming {
    /// Features the destination offers.
    pub fn device_features(&self) -> u64 {
        self.conn.device_features
    }

    /// Protocol features in use on the destination.
    pub fn protocol(&self) -> VhostUserProtocolFeatures {
        self.conn.protocol
    }

    /// The destination's backend-request channel, if one was opened.
    pub fn backend_channel(&self) -> Option<&BackendChannel> {
        self.conn.channel.as_ref()
    }

    /// Load device state saved by the source's [`Session::save_state`]:
    /// `SET_DEVICE_STATE_FD(LOAD)`, write, close, `CHECK_DEVICE_STATE`. A back
    /// end that refuses the data fails here.
    pub fn load_state(&mut self, data: &[u8]) -> Result<(), Error> {
        load_device_state(&mut self.conn.fe, data)
    }

    /// Start the device where `from` stopped: `SET_FEATURES` with the
    /// driver's features, `SET_MEM_TABLE` with `from`'s guest RAM, then every
    /// queue of `from` at the position its `GET_VRING_BASE` returned, with the
    /// same rings and eventfds, kicked once so the ring starts. On success the
    /// queues belong to the returned session and `from` has none left (drop
    /// it: that closes the source connection). On failure `from` is untouched.
    pub fn resume(self, from: &mut Session) -> Result<Session, Error> {
        if let Some(index) = from.stopped.iter().position(Option::is_none) {
            return Err(Error::QueueRunning(index));
        }
        // Logging is the source's business during migration; the
        // destination starts without it.
        let features = from.features & !LOG_ALL;
        let missing = features & !self.conn.device_features;
        if missing != 0 {
            return Err(Error::FeaturesMissing(missing));
        }
        let mut session = self.conn.configure(from.ram.clone(), features)?;
        for (index, (vq, base)) in from.queues.iter().zip(&from.stopped).enumerate() {
            let base = base.ok_or(Error::QueueRunning(index))?;
            start_vring(
                &mut session.fe,
                &session.ram,
                session.features,
                index,
                vq,
                base,
            )?;
        }
        session.queues = std::mem::take(&mut from.queues);
        session.stopped = vec![None; session.queues.len()];
        from.stopped.clear();
        for vq in &session.queues {
            // "The back-end must start a ring upon receiving a kick"
            // (vhost-user.rst "Ring states").
            vq.kick()?;
        }
        session.barrier()?;
        Ok(session)
    }
}

impl Session {
    /// Connect to a migration destination at `path` and negotiate, without
    /// setting up the device (step 1 of [`crate::migration`]). `opts`
    /// supplies the protocol features and backend-request options; guest RAM,
    /// queues and features come from the source at [`Incoming::resume`].
    pub fn connect_incoming(path: &Path, opts: &Options) -> Result<Incoming, Error> {
        Ok(Incoming {
            conn: Connection::open(path, opts)?,
        })
    }

    /// Migrate to the back end at `path`: connect and negotiate, stop every
    /// queue here, move the device state if this back end has
    /// `DEVICE_STATE`, then start the destination's queues at the saved ring
    /// positions over the same guest memory. On success `self` *is* the
    /// destination's session, carrying on with the same queues, and the
    /// source connection is closed — handy when the session lives inside
    /// another value (a [`crate::vsock::VsockGuest`], say).
    ///
    /// On failure `self` is still the source, with its queues stopped if they
    /// got that far: call [`Session::restart_queues`] to carry on.
    pub fn migrate(&mut self, path: &Path, opts: &Options) -> Result<(), Error> {
        let mut incoming = Session::connect_incoming(path, opts)?;
        self.stop_queues()?;
        if self
            .protocol
            .contains(VhostUserProtocolFeatures::DEVICE_STATE)
        {
            if !incoming
                .protocol()
                .contains(VhostUserProtocolFeatures::DEVICE_STATE)
            {
                return Err(Error::NotOffered(
                    "VHOST_USER_PROTOCOL_F_DEVICE_STATE on the destination",
                ));
            }
            let state = self.save_state()?;
            incoming.load_state(&state)?;
        }
        let destination = incoming.resume(self)?;
        drop(std::mem::replace(self, destination));
        Ok(())
    }

    /// [`Self::migrate`], by value: returns the destination's session, or
    /// the source in the error.
    pub fn migrate_to(mut self, path: &Path, opts: &Options) -> Result<Session, MigrateError> {
        match self.migrate(path, opts) {
            Ok(()) => Ok(self),
            Err(error) => Err(MigrateError {
                session: Box::new(self),
                error,
            }),
        }
    }
}
